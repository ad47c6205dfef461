"""jukics.store: the encrypted resident store (current + history), outbox, retention, migrations.

Modules: :mod:`.db` (engines, ``upgrade``), :mod:`.schema`, :mod:`.crypto`, :mod:`.normalise`,
:mod:`.repository` (``ResidentStore``), :mod:`.retention` (``purge``), :mod:`.clock`.
"""
