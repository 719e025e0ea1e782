"""gridnet: custom recurrent policies trained, evaluated, compared, swept and packaged by DAF, kept outside DAF.

Put `examples/` on the Python path (or install the folder as a package) and name the class by its path:
`daf_run_training_pipeline(policy_class_path="gridnet.GRUPolicy", ...)`.
- `gridnet.GRUPolicy`: a DAF `NeuralPolicy` naming its network (policy.py);
- `gridnet.PlainGRUPolicy`: the specification's shape, a plain mettagrid `MultiAgentPolicy` that sets
  `self.network` and imports nothing of DAF (plain.py).
"""

from gridnet.plain import PlainGRUPolicy, StepGRU
from gridnet.policy import GRUNet, GRUPolicy

__all__ = ["GRUNet", "GRUPolicy", "PlainGRUPolicy", "StepGRU"]
