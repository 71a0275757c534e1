"""Measuring fusion: the standard metrics, the classical baselines, controlled perturbations, the
``isfl evaluate`` tables and the ``isfl benchmark robustness`` benchmark. Everything here works on numpy
arrays; torch is loaded only when ISFL itself is scored."""
