"""Ray runtime: sharded SourceOwner actors, the JobManager, the driver client."""

from datawave.datasource.actors.jobs import JobManager, OwnerDirectory
from datawave.datasource.actors.owner import SourceOwner

__all__ = ["JobManager", "OwnerDirectory", "SourceOwner"]
