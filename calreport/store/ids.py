from ulid import ULID


def new_run_id(ts_ms: int | None = None) -> str:
    return str(ULID()) if ts_ms is None else str(ULID.from_timestamp(ts_ms / 1000))
