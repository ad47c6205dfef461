"""jukics.domain: the 本人確認情報 record and the rules for accepting changes to it.

- ``fields``: the shared field names (the contract between layers);
- ``errors``: ``DomainError`` and the table of stable error codes;
- ``identifiers``: 個人番号, 住民票コード (pluggable validator), 市町村コード;
- ``dates``: ISO and 和暦 dates;
- ``text``: text normalisation and 清音化かな;
- ``reasons``: the 異動事由 table;
- ``validate``: one intake item → a validated ``Update``; the 更新順番号 rule.
"""
