"""A user's workflows, tested end to end on aion in containers."""
