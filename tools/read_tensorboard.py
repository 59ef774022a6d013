"""Print the scalars of a run folder's TensorBoard event files as TensorBoard itself reads them.

    PYTHONPATH=.pytools python3 tools/read_tensorboard.py runs/<name>

Output: JSON {tag: [[step, value], ...]} through TensorBoard's EventAccumulator (which checks the
records' CRCs and drops events a later file's SessionLog START supersedes).
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
