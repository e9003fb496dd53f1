"""The state of one run that library functions report into: defined in
:mod:`vpcli.run_context` (outside this package, so the vision network can use it without
loading the library), re-exported here for the library's functions."""

from vpcli.run_context import FeedbackItem, OutputValue, RunContext, SavedVolume

__all__ = ['FeedbackItem', 'OutputValue', 'RunContext', 'SavedVolume']
