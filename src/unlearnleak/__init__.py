"""unlearnleak: measure how much machine unlearning leaks about the data it deletes.

Implements and extends Hu et al., "Learn What You Want to Unlearn: Unlearning Inversion
Attacks against Machine Unlearning" (IEEE S&P 2024).
"""

__version__ = "0.1.0"
