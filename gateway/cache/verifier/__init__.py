"""Hit verification: the rules (``verify``), the slots they compare (``slots``) and the
vocabulary (``lexicon``)."""
