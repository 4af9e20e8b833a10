"""The benchmark: `jifen bench --mode pipeline|ledger|history|rules|all` (bench.main)."""
