"""The tests' name for the real-site harness, which lives in msupply.sites for the demo too."""

from msupply.sites import (
    ROOT,
    SYNC_PASSWORD,
    SYNC_USERNAME,
    UNLOCK_CODE,
    Cluster,
    Site,
    free_port,
    wait_for_port,
)

__all__ = [
    "ROOT",
    "SYNC_PASSWORD",
    "SYNC_USERNAME",
    "UNLOCK_CODE",
    "Cluster",
    "Site",
    "free_port",
    "wait_for_port",
]
