"""Stages: orchestration only (which transforms, which sim, which evaluations).

Which stages exist, and what each is for, is declared once in :mod:`workbench.registry`.
"""
