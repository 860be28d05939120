"""``aion scheduler``: schedules (cron or interval) start workflow runs, each fire once.

Definitions come from the compacted ``<prefix>.schedules`` topic (the API writes them);
:class:`SchedulerService` owns them by partition and writes each fire's start command and
the schedule's new state in one Kafka transaction.
"""

from aion_scheduler.book import Book, Fire, Step
from aion_scheduler.options import SchedulerOptions
from aion_scheduler.service import SchedulerService

__all__ = ["Book", "Fire", "SchedulerOptions", "SchedulerService", "Step"]
