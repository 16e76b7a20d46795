"""Scoring finished students: generation metrics (ROUGE-L, BERTScore), statistics, the paper evaluation suite."""
