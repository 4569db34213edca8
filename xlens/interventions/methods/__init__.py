"""The built-in intervention methods, one per file; importing this package registers them, in this order."""

# isort: off
from xlens.interventions.methods.force import Force
from xlens.interventions.methods.damp import Damp
from xlens.interventions.methods.det0 import Det0
from xlens.interventions.methods.aura import Aura
from xlens.interventions.methods.lape import Lape
from xlens.interventions.methods.diffmean import DiffMean

# isort: on

__all__ = ["Aura", "Damp", "Det0", "DiffMean", "Force", "Lape"]
