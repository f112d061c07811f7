"""The chunked execution engine: tasks over the chunk grid or over cells, done-markers, executors, the driver."""

from syconn_ng.engine.driver import Pass, Progress, Stage, StageReport, run_stage, stage_done
from syconn_ng.engine.executors import DaskExecutor, LocalExecutor, make_executor
from syconn_ng.engine.tasks import Task, TaskResult

__all__ = ["DaskExecutor", "LocalExecutor", "Pass", "Progress", "Stage", "StageReport", "Task", "TaskResult",
           "make_executor", "run_stage", "stage_done"]
