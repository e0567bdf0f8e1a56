"""Token-reduction methods, one small module each, registered by config name."""
from vtr_bench.methods.base import Method, check_budget
from vtr_bench.methods.cdpruner import CDPruner
from vtr_bench.methods.dart import DART
from vtr_bench.methods.divprune import DivPrune
from vtr_bench.methods.downsample import Downsample
from vtr_bench.methods.fastervlm import FasterVLM
from vtr_bench.methods.fastv import FastV, RandomDrop
from vtr_bench.methods.full import Full
from vtr_bench.methods.gsearch import GSearch
from vtr_bench.methods.pdrop import PyramidDrop
from vtr_bench.methods.psigmoid import PSigmoid
from vtr_bench.methods.schedule import GivenSchedule
from vtr_bench.methods.sparsevlm import SparseVLM
from vtr_bench.methods.visionzip import VisionZip
from vtr_bench.methods.vispruner import VisPruner

__all__ = ["Method", "check_budget", "Full", "FastV", "RandomDrop", "GivenSchedule", "PyramidDrop", "SparseVLM",
           "Downsample", "GSearch", "PSigmoid", "VisionZip", "DART", "DivPrune", "FasterVLM", "VisPruner", "CDPruner"]
