"""Outgoing clearing files: Visa Base II (``base2``) and Mastercard IPM (``ipm``).

Both take and give a ``model.ClearingFile`` of ``model.Presentment``s; see README.md.
"""
