"""Defences: robust training, input preprocessing, detection, certification."""
