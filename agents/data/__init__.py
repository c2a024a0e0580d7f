"""Editable data files the agents read: drug brand and ingredient names, clinical synonyms."""
