"""SAEBench 0.6 integration: runner, suite specs, report, diagnostics suite, CLI."""
