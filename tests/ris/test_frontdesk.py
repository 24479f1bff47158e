"""The front-desk page rendered and used in headless Chromium."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.ris import hl7msgs as m
from tests.ris.chromium import Chromium, chromium_path
from tests.ris.peers import msa

pytestmark = pytest.mark.integration


def test_todays_orders_by_status_and_check_in(ris_factory, tmp_path):
    chromium_path()
    ris = ris_factory()
    # A slot later today (or the first minutes of today if it is late): the page shows today only.
    now = datetime.now()
    when = min(now + timedelta(minutes=5), now.replace(hour=23, minute=59))
    assert msa(ris.send(m.adt("A04", "FD1", name="DESK^ALICE")))[0] == "AA"
    assert msa(ris.send(m.adt("A04", "FD2", name="DESK^BOB", insured=False)))[0] == "AA"
    assert msa(ris.send(m.orm("FD1", "PO-FD1", when=f"{when:%Y%m%d%H%M}")))[0] == "AA"
    assert msa(ris.send(m.orm("FD2", "PO-FD2", when=f"{when:%Y%m%d%H%M}")))[0] == "AA"
    assert msa(ris.send(m.orm("FD2", "PO-FD3", when="203001010900")))[0] == "AA"  # not today
    acc1, acc2 = (o["accession"] for o in sorted(ris.get("/api/orders?date=today"), key=lambda o: o["placer_order"]))
    url = f"http://127.0.0.1:{ris.http_port}/"

    async def steps(page):
        await page.goto(url)
        seen = {
            "refresh": await page.evaluate("document.querySelector('meta[http-equiv=refresh]').content"),
            "scheduled": await page.evaluate("[...document.querySelectorAll('#status-scheduled tr[data-accession]')].map(r => r.dataset.accession)"),
            "flag": await page.evaluate(f"document.querySelector('tr[data-accession=\"{acc2}\"] .flag').textContent"),
            "names": await page.evaluate("document.body.innerText.includes('DESK, ALICE')"),
        }
        await page.evaluate(f"document.querySelector('tr[data-accession=\"{acc1}\"] button').click()")
        await page.wait_for(f"document.querySelector('#status-arrived tr[data-accession=\"{acc1}\"]') !== null")
        seen["arrived"] = await page.evaluate("[...document.querySelectorAll('#status-arrived tr[data-accession]')].map(r => r.dataset.accession)")
        seen["button_left"] = await page.evaluate(f"document.querySelector('tr[data-accession=\"{acc1}\"] button') !== null")
        return seen

    browser = Chromium(tmp_path / "profile").start()
    try:
        seen = browser.run(steps)
    finally:
        browser.stop()
    assert int(seen["refresh"]) > 0
    assert sorted(seen["scheduled"]) == sorted([acc1, acc2])
    assert seen["flag"] == "no insurance" and seen["names"]
    assert seen["arrived"] == [acc1] and not seen["button_left"]
    assert ris.get(f"/api/orders/{acc1}")["timeline"][-1]["source"] == "front desk"
