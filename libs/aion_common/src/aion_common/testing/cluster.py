"""A multi-node Apache Kafka (KRaft) cluster on 127.0.0.1, from the same Maven jars (issue 22).

Every test and benchmark used to run against one broker, while production clusters have
several whose partition leaders move. :class:`KafkaCluster` starts ``nodes`` combined
broker+controller nodes (a static quorum of every node, as a small KRaft cluster is usually
run), each a :class:`~aion_common.testing.broker.KafkaBroker` with its own data directory,
ports, log and pid, with production settings: replication factor ``min(nodes, 3)`` for the
defaults and the internal topics, ``min.insync.replicas`` 2 once there are three replicas, and
unclean leader election off. A node can be stopped, killed and restarted on its own
(``cluster.nodes[i]``); the cluster's ids and ports are kept under ``data_dir`` so it restarts
where it was. Each node's heap defaults to 512 MiB (three of them fit a CI machine beside the
services).

    with KafkaCluster(tmp / "kafka", nodes=3) as cluster:
        settings = Settings(bootstrap_servers=cluster.bootstrap_servers, replication_factor=3)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from aion_common.testing._support import ProvisionError, free_port, port_is_free
from aion_common.testing.broker import (
    ClusterNode,
    KafkaBroker,
    metadata_broker_count,
    new_cluster_id,
)

__all__ = ["KafkaCluster"]

_PLAN = "cluster.json"
_MAX_REPLICATION = 3


class KafkaCluster:
    """``nodes`` KRaft nodes forming one cluster; ``start()`` returns once every node is a
    registered broker (a metadata request lists them all)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nodes: int = 3,
        heap: str = "512m",
        start_timeout: float = 90.0,
        die_with_parent: bool = False,
        repo_root: Path | None = None,
    ) -> None:
        if nodes < 1:
            raise ProvisionError(f"a cluster needs at least one node, not {nodes}")
        self.data_dir = data_dir.resolve()
        self._start_timeout = start_timeout
        self.replication = min(nodes, _MAX_REPLICATION)
        plan = self._plan(nodes)
        self.nodes = [
            KafkaBroker(
                self.data_dir / f"node-{node.node_id}",
                repo_root=repo_root,
                heap=heap,
                start_timeout=start_timeout,
                die_with_parent=die_with_parent,
                node=node,
            )
            for node in plan
        ]

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, comma-separated (clients skip the ones that are down)."""
        return ",".join(f"127.0.0.1:{node.node.port}" for node in self.nodes if node.node)

    @property
    def pids(self) -> dict[int, int]:
        """The running nodes' Java process ids, by node id."""
        return {
            node.node.node_id: node.pid
            for node in self.nodes
            if node.node is not None and node.pid is not None
        }

    def node(self, node_id: int) -> KafkaBroker:
        """The node with id ``node_id`` (1, 2, …)."""
        for node in self.nodes:
            if node.node is not None and node.node.node_id == node_id:
                return node
        raise ProvisionError(f"no node {node_id} in this cluster")

    def start(self) -> None:
        """Launch every node, then wait until each answers and the cluster lists them all."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
            self.wait_registered(len(self.nodes))
        except BaseException:
            self.stop()
            raise

    def wait_registered(self, count: int) -> None:
        """Until a metadata request to any running node lists ``count`` brokers."""
        deadline = time.monotonic() + self._start_timeout
        seen = 0
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.pid is None:
                    continue
                try:
                    seen = metadata_broker_count("127.0.0.1", node.port)
                except OSError:
                    continue
                if seen >= count:
                    return
            time.sleep(0.2)
        raise ProvisionError(
            f"the Kafka cluster under {self.data_dir} lists {seen} brokers, not {count}, after "
            f"{self._start_timeout:.0f} s; node logs: "
            + ", ".join(str(node.log_path) for node in self.nodes)
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after ``timeout``); safe to call twice."""
        for node in self.nodes:
            node.stop(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _plan(self, count: int) -> list[ClusterNode]:
        """Node ids, ports and the cluster id: kept from an earlier start while the ports are
        free (every node must name the same controllers), else chosen now."""
        path = self.data_dir / _PLAN
        kept = json.loads(path.read_text()) if path.exists() else None
        if kept is not None and len(kept["ports"]) == count:
            ports = [tuple(pair) for pair in kept["ports"]]
            if not all(port_is_free(p) for pair in ports for p in pair):
                ports = _free_pairs(count)
            cluster_id = str(kept["cluster_id"])
        else:
            ports, cluster_id = _free_pairs(count), new_cluster_id()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cluster_id": cluster_id, "ports": ports}))
        voters = ",".join(
            f"{index}@127.0.0.1:{controller}" for index, (_, controller) in enumerate(ports, 1)
        )
        return [
            ClusterNode(
                node_id=index,
                port=port,
                controller_port=controller,
                voters=voters,
                cluster_id=cluster_id,
                replication=self.replication,
            )
            for index, (port, controller) in enumerate(ports, 1)
        ]


def _free_pairs(count: int) -> list[tuple[int, int]]:
    chosen: list[int] = []
    for _ in range(2 * count):
        chosen.append(free_port(avoid=chosen))
    return [(chosen[2 * i], chosen[2 * i + 1]) for i in range(count)]
