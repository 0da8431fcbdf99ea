"""Regions dock widget: atlas regions ranked by their share in the map's top 10 %,
subject beside population.

Rows are Harvard-Oxford structures (left and right merged), sorted by the
subject's share (the population's when no subject map is picked; ties by mean
importance); see ``population.RegionScore`` for why the share and not the mean.
Clicking a row moves the sliders to that region's most important voxel.
"""

from __future__ import annotations

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton, Table
from napari.utils.notifications import show_error

from ...compare import origin_mismatch
from ...population import TOP_PERCENT, RegionScore, rank_regions_of, region_peak
from ._common import (
    MapPickers,
    go_to,
    layer_origin,
    layer_volume,
    ras_to_world,
    wrapping_label,
)

COLUMNS = ("region", "subject", "population")  # the numbers: % of the region in the map's top 10 %


class RegionsWidget(MapPickers, Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = viewer
        self.subject = ComboBox(label="subject map", choices=self._subject_choices, nullable=True,
                                tooltip="A subject's importance map (from Brain age; follows the scan "
                                        "selected in the layer list).")
        self.population = ComboBox(label="population", choices=self._population_choices, nullable=True,
                                   tooltip="A population map (from the Population widget).")
        self.rank = PushButton(text="Rank regions", tooltip=f"Share of each atlas region in the map's top "
                                                             f"{TOP_PERCENT:g} %.")
        self.table = Table(label="regions", value={"data": [], "index": [], "columns": list(COLUMNS)})
        self.table.read_only = True
        self.table.native.setSelectionBehavior(self.table.native.SelectionBehavior.SelectRows)
        self.table.native.setMinimumHeight(150)  # it scrolls; taller, three docked widgets outgrew a 1080 px screen
        header = self.table.native.horizontalHeader()
        header.setSectionResizeMode(header.ResizeMode.ResizeToContents)  # the numbers
        header.setStretchLastSection(False)
        self.table.native.setToolTip(SHARE_TOOLTIP)
        self.hint = wrapping_label(Label(label="", value=CLICK_HINT))  # a note on mismatched maps is long
        self.extend([self.subject, self.population, self.rank, self.table, self.hint])
        self.rank.changed.connect(self.rank_regions)
        self.subject.changed.connect(self.rank_regions)
        self.population.changed.connect(self.rank_regions)
        self.table.native.cellClicked.connect(lambda row, _column: self.go_to_region(self.rows[row][0]))
        self._watch_layers()
        self.rows: list[tuple[str, float | None, float | None]] = []
        self._refresh_choices()


    def rank_regions(self, _value=None) -> list[tuple[str, float | None, float | None]]:
        """Fill the table; returns its rows (region, subject share, population share), shares in 0-1."""
        ranked: dict[str, dict[str, RegionScore]] = {}  # region -> column -> its score
        for column, layer in (("subject", self.subject.value), ("population", self.population.value)):
            if layer is None:
                continue
            try:
                scores: list[RegionScore] = rank_regions_of(layer_volume(layer))
            except ValueError as err:
                show_error(f"Regions: {layer.name}: {err}")
                continue
            for score in scores:
                ranked.setdefault(score.region, {})[column] = score
        key = "subject" if self.subject.value is not None else "population"
        # Ranks of two methods' or models' maps differ whatever the subject: say so under the table.
        mismatch = (origin_mismatch(layer_origin(self.subject.value), layer_origin(self.population.value))
                    if self.subject.value is not None and self.population.value is not None else None)
        self.hint.value = f"Note: {mismatch}." if mismatch else CLICK_HINT

        def order(item) -> tuple[float, float]:  # by share, ties by mean importance (rank_regions' order)
            score = item[1].get(key)
            return (-score.top_share, -score.mean_importance) if score else (0.0, 0.0)

        def share(score: RegionScore | None) -> float | None:
            return None if score is None else score.top_share

        self.rows = [(region, share(columns.get("subject")), share(columns.get("population")))
                     for region, columns in sorted(ranked.items(), key=order)]
        self.table.value = {"data": [[region.replace("_", " "), _fmt(s), _fmt(p)] for region, s, p in self.rows],
                            "index": [str(rank) for rank in range(1, len(self.rows) + 1)], "columns": list(COLUMNS)}
        # Long region names get the room left over, so the numbers stay in view.
        header = self.table.native.horizontalHeader()
        header.setSectionResizeMode(0, header.ResizeMode.Stretch)
        return self.rows

    def go_to_region(self, region: str):
        """Move the sliders to the region's most important voxel (subject map first)."""
        layer = self.subject.value or self.population.value
        if layer is None:
            show_error("Regions: no map to search.")
            return None
        world = ras_to_world(region_peak(layer_volume(layer), region))
        go_to(self._viewer, world)
        return world


CLICK_HINT = "Click a region to show its most important voxel."
SHARE_TOOLTIP = (f"Share of the region's voxels among the map's top {TOP_PERCENT:g} % of the brain: "
                 f"{TOP_PERCENT:g} % is what a map with no preference gives, 100 % puts the whole region "
                 "in the top. Click a row to go to the region's peak.")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f} %"
