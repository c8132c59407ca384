"""The shipped recipes (YAML), installed as package data ``hhalign.recipes``: ``--config paper/sft`` finds them."""
