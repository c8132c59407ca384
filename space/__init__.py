"""The Space's files, installed as package data ``hhalign.space_files`` so ``hhalign deploy`` works from a wheel."""
