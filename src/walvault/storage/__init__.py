"""Where the archive's bytes live: one interface (:mod:`.base`), one driver per kind of store."""
