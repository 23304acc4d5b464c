"""One book across instances (DESIGN §13, docs/design.md D17), pure: what each positions
partition contributes per asset (`partial`), the net position of an asset and its advice
(`net`), the stage that owns assets and sums their contributions (`aggregate`), and the
broadcast view of the whole book every instance serves (`view`). No I/O, no clock."""

from stream_risk.book.aggregate import BookAggregator
from stream_risk.book.net import NetBook, net_record, per_position_hedges
from stream_risk.book.partial import Partial, parse_partial_key, partial_key
from stream_risk.book.view import BookView

__all__ = [
    "BookAggregator",
    "BookView",
    "NetBook",
    "Partial",
    "net_record",
    "parse_partial_key",
    "partial_key",
    "per_position_hedges",
]
