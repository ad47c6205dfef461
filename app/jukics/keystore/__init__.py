"""jukics.keystore: the key-store interface (:mod:`.base`) and its backends (:mod:`.dev` for now)."""

from jukics.keystore.base import KeyStore, KeyStoreError, TlsKeySource, open_keystore

__all__ = ["KeyStore", "KeyStoreError", "TlsKeySource", "open_keystore"]
