"""A harvest line and the sidecar of lines compaction set aside."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    model_validator,
)

from calreport.model._base import StrictNumber, _Lenient


class HarvestRow(_Lenient):
    """One line of data/harvest/<UNDERLYING>/YYYY-MM-DD.jsonl(.gz): a Deribit book-summary row
    (Deribit's field names and units) plus `harvested_at`. Written by market/harvest.py
    (`calreport harvest`) and market/sample.py; read by market/harvest.py, which counts a line
    that breaks these rules as a schema error and skips it. Other Deribit fields are kept."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"anyOf": [{"required": ["harvested_at"]}, {"required": ["creation_timestamp"]}]},
    )

    instrument_name: str = Field(description="Deribit option name, e.g. BTC-27DEC24-60000-C (expires 08:00 UTC that day).")
    mark_price: StrictNumber = Field(ge=0, description="Mark price (base coin).")
    mark_iv: StrictNumber = Field(ge=0, description="IV of the mark (percent, as Deribit sends it).")
    underlying_price: StrictNumber = Field(gt=0, description="The expiry's forward (USD).")
    underlying_index: str | None = Field(default=None, description="The forward's index name (early harvests).")
    bid_price: StrictNumber | None = Field(default=None, description="Best bid (base coin); null or absent when there is none.")
    ask_price: StrictNumber | None = Field(default=None, description="Best ask (base coin); null or absent when there is none.")
    open_interest: StrictNumber | None = Field(default=None, description="Open interest (contracts).")
    creation_timestamp: StrictNumber | None = Field(default=None, description="Deribit's time of the row (ms since the epoch).")
    harvested_at: StrictNumber | None = Field(
        default=None,
        description="When the snapshot was harvested: its newest creation_timestamp (ms since the epoch); older "
        "harvesters wrote only creation_timestamp.",
    )
    index_price: StrictNumber | None = Field(
        default=None,
        description="Deribit's index (public/get_index_price, USD) fetched with the snapshot by `calreport harvest "
        "--every`; RV uses it when every snapshot of the series has it.",
    )

    @model_validator(mode="after")
    def _has_time(self) -> HarvestRow:
        if self.harvested_at is None and self.creation_timestamp is None:
            raise ValueError("a harvest row needs harvested_at or creation_timestamp")
        return self


# --------------------------------------------------------------------------- harvest errors sidecar


class RejectedLine(_Lenient):
    """One harvest line compaction set aside, kept verbatim (up to 2000 characters)."""

    line: int = Field(ge=1, description="Its number among the log's non-blank lines.")
    reason: Literal["schema error", "bad name"] = Field(description="Why the reader skips it.")
    text: str = Field(description="The line as it was (invalid UTF-8 replaced), cut at 2000 characters.")
    truncated_chars: int | None = Field(default=None, description="Characters cut from `text`, when it was cut.")


class RejectedSource(_Lenient):
    """The lines set aside from one compacted log file."""

    lines: int = Field(ge=0, description="Non-blank lines compaction read from the log.")
    rejected: list[RejectedLine] = Field(default_factory=list, description="Every line set aside, in order.")


class HarvestErrors(_Lenient):
    """data/harvest/<UNDERLYING>/YYYY-MM-DD.errors.json: what compaction (market/compact.py) did not put
    into the day's Parquet file, so no line is dropped silently. Counts match the Parquet footer's."""

    schema_version: Literal[1] = 1
    underlying: str
    date: str = Field(description="The UTC day, YYYY-MM-DD.")
    schema_errors: int = Field(ge=0, description="Lines that are not a valid harvest row, over every compaction of the day.")
    bad_names: int = Field(ge=0, description="Rows whose instrument is not an option of the underlying.")
    sources: dict[str, RejectedSource] = Field(
        description="Per compacted log, keyed `<file name>@<first 16 hex of its sha256>` (a re-run rewrites its entry)."
    )
