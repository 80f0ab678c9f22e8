"""Pure tensor functions: pair selection, penalties, schedules, diagnostics. Never imports SAELens."""
