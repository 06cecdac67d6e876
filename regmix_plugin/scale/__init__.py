"""The scaling stage: step and size laws, nested prediction, the rank check, and their CLI."""

# Here rather than in match.py so that building the CLI parser (which shows it as a flag default) does not
# import pandas: every `regmix train` of a sweep builds that parser. DECISIONS 40 says why 1e-4.
MATCH_TOL = 1e-4
