"""Run directories, imported logs (TensorBoard, long CSV, Olmix, RegMix) and run curves -> one runs table."""
