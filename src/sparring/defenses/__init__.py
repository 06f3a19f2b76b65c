"""Defences: robust training (:mod:`.training`), input preprocessing (:mod:`.preprocess`), detection
(:mod:`.detect`), certification (:mod:`.certify`). Import from the submodules."""
