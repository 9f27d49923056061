"""Stage functions: each reads what the previous stage wrote in the store and writes its own
results there. Flows in ``flows/`` wrap these as Prefect tasks; nothing here imports Prefect.

source -> embed -> store -> measure -> report
"""
