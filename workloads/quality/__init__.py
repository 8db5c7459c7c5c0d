"""Quality phase: tiny models trained per attention variant on synthetic recall tasks."""
