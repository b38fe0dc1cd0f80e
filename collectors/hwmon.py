"""``hwmon``: hardware temperatures from ``{sys_root}/class/hwmon`` (node_exporter's ``hwmon``, temperature part).

Each ``hwmonN`` directory is a chip; its ``tempN_<property>`` files hold
millidegrees Celsius. As node_exporter does, ``tempN_input`` becomes
``node_hwmon_temp_celsius{chip,sensor="tempN"}``, any other property
``node_hwmon_temp_<property>_celsius``, ``tempN_label`` becomes
``node_hwmon_sensor_label{chip,sensor,label}`` and the chip's ``name`` file
``node_hwmon_chip_names{chip,chip_name}``. The ``chip`` label is node_exporter's
stable name: ``<bus>_<device>`` from the ``device`` link, else the ``name`` file,
else ``hwmonN``. Fans, voltages, currents and power are not reported (yet).
A host without hwmon (most VMs) has nothing to report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, CollectorUnavailable, MetricSpec, Sample

_INVALID = re.compile(r"[^a-z0-9:_]")
_SENSOR_FILE = re.compile(r"^(temp)([0-9]*)(?:_(.+))?$")
TEMP_PROPERTIES = ("crit", "crit_alarm", "crit_hyst", "emergency", "emergency_hyst", "lcrit", "max", "max_hyst", "min", "min_hyst", "alarm", "lowest", "highest", "offset", "fault")
LABELS = ("chip", "sensor")


def clean_name(name: str) -> str:
    """node_exporter's cleanMetricName: lower case, anything but [a-z0-9:_] to '_', '_' trimmed."""
    return _INVALID.sub("_", name.lower()).strip("_")


def chip_name(device_link: str | None, name_file: str | None, dirname: str) -> str:
    """The stable chip label from the resolved ``device`` link, the ``name`` file, or the directory name."""
    if device_link:
        prefix, dev = os.path.split(device_link.rstrip("/"))
        dev_type = os.path.basename(prefix)
        cdev, ctype = clean_name(dev), clean_name(dev_type)
        if cdev and ctype:
            return f"{ctype}_{cdev}"
        if cdev:
            return cdev
    if name_file:
        c = clean_name(name_file.strip())
        if c:
            return c
    return clean_name(dirname)


def temp_metric(prop: str) -> str:
    return "node_hwmon_temp_celsius" if prop in ("", "input") else f"node_hwmon_temp_{prop}_celsius"


def parse_sensor_files(files: dict[str, str]) -> tuple[dict[tuple[str, str], float], dict[str, str]]:
    """From ``{file name: content}`` of one chip: ``{(metric, sensor): celsius}`` and ``{sensor: label}``."""
    values: dict[tuple[str, str], float] = {}
    labels: dict[str, str] = {}
    for fname, text in files.items():
        m = _SENSOR_FILE.match(fname)
        if not m:
            continue
        sensor = f"temp{m.group(2)}"
        prop = m.group(3) or ""
        if prop == "label":
            labels[sensor] = text.strip()
            continue
        try:
            if prop == "type":  # a sensor type code, not a temperature: unscaled, as node_exporter
                values[("node_hwmon_temp_type", sensor)] = float(int(text.strip()))
            else:
                values[(temp_metric(prop), sensor)] = int(text.strip()) * 0.001
        except ValueError:
            continue
    return values, labels


class HwmonCollector(Collector):
    name = "hwmon"
    metrics = (
        MetricSpec("node_hwmon_chip_names", GAUGE, "Annotation metric for human-readable chip names", ("chip", "chip_name")),
        MetricSpec("node_hwmon_sensor_label", GAUGE, "Label for given chip and sensor", ("chip", "label", "sensor")),
        MetricSpec("node_hwmon_temp_celsius", GAUGE, "Hardware monitor for temperature (input)", LABELS, "celsius"),
        MetricSpec("node_hwmon_temp_type", GAUGE, "Hardware monitor for temperature (type)", LABELS),
        *(MetricSpec(temp_metric(p), GAUGE, f"Hardware monitor for temperature ({p})", LABELS, "celsius") for p in TEMP_PROPERTIES),
    )

    def collect(self) -> Iterator[Sample]:
        base = os.path.join(self.ctx.sys_root, "class", "hwmon")
        try:
            entries = sorted(os.listdir(base))
        except FileNotFoundError as e:
            raise CollectorUnavailable("no /sys/class/hwmon") from e
        for entry in entries:
            d = os.path.join(base, entry)
            yield from self._chip(d, entry)

    def _chip(self, d: str, entry: str) -> Iterator[Sample]:
        dev = os.path.join(d, "device")
        device_link = os.path.realpath(dev) if os.path.islink(dev) else None
        try:
            name_text = _procfs.read_optional(os.path.join(d, "name"))
        except OSError:
            name_text = None
        chip = chip_name(device_link, name_text, os.path.basename(os.path.realpath(d)) or entry)
        files: dict[str, str] = {}
        for sub in (d, dev):  # old kernels keep the sensor files under device/
            try:
                names = os.listdir(sub)
            except OSError:
                continue
            for fname in names:
                if not fname.startswith("temp") or fname in files:
                    continue
                try:
                    files[fname] = _procfs.read_text(os.path.join(sub, fname))
                except OSError:
                    continue  # a sensor that cannot be read right now (EIO, EAGAIN): skipped as node_exporter does
        if name_text is not None and name_text.strip():
            yield self.sample("node_hwmon_chip_names", 1.0, {"chip": chip, "chip_name": name_text.strip()})
        values, labels = parse_sensor_files(files)
        for sensor, label in sorted(labels.items()):
            yield self.sample("node_hwmon_sensor_label", 1.0, {"chip": chip, "label": label, "sensor": sensor})
        for (metric, sensor), v in sorted(values.items()):
            lab = {"chip": chip, "sensor": sensor}
            if metric in self._specs:
                yield self.sample(metric, v, lab)
            else:
                yield Sample(metric, GAUGE, v, lab)
