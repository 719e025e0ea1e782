"""gridnet: a custom recurrent policy trained, evaluated, compared, swept and packaged by DAF, kept outside DAF.

Put `examples/` on the Python path (or install the folder as a package) and name the class by its path:
`daf_run_training_pipeline(policy_class_path="gridnet.GRUPolicy", ...)`.
"""

from gridnet.policy import GRUNet, GRUPolicy

__all__ = ["GRUNet", "GRUPolicy"]
