"""Figures and reports of stored studies and transfers."""
