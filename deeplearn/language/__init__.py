"""Language and sequences: count-based n-gram language models (ngram.py) and the
tokenised tiny shakespeare they are measured on (corpus.py)."""
