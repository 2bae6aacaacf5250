"""The runs page in a real browser against a real server process."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Browser, Page, Route, expect

from e2e.conftest import SCREENSHOTS, XSS_ATTR, XSS_SCRIPT, Server, Watch, settle

ALL = "/?from="


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query, keep_blank_values=True)


def row_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#rows tr.run", "rs => rs.map(r => r.dataset.run)")


def total(page: Page) -> str:
    return page.inner_text("#total")


def test_rail_filter_updates_url_and_survives_reload(page: Page) -> None:
    page.goto(ALL)
    before = total(page)
    page.click('#facet-status a.fv-main[aria-label^="Status: failed"]')
    expect(page).to_have_url(re.compile(r"status=failed"))
    settle(page)
    assert total(page) != before
    rows, count = row_ids(page), total(page)
    assert rows and page.locator("#rows .dot.s-failed").count() == len(rows)
    expect(page.locator("#cmd")).to_have_value("status:failed since:all")
    page.reload()
    assert row_ids(page) == rows and total(page) == count
    # "only" narrows the trigger facet to one value, and back/forward restore views.
    page.hover('#facet-trigger li.fv:first-child')
    page.click('#facet-trigger li.fv:first-child a.fv-act:text("only")')
    expect(page).to_have_url(re.compile(r"trigger="))
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"trigger="))
    settle(page)
    assert row_ids(page) == rows


def test_an_inline_style_from_outside_survives_a_swap_without_csp_errors(page: Page) -> None:
    # Browser extensions, and Playwright's own screenshots (caret-color), put
    # inline styles on the page's inputs. When a swap replaces an element,
    # htmx settles some attributes from the old one onto the new with
    # setAttribute, which the CSP refuses for style: a console error on every
    # swap. The page settles class, width and height only. (The fixture fails
    # the test on any console error.)
    page.goto(ALL)
    settle(page)
    page.eval_on_selector("#cmd", "e => { e.style.caretColor = 'transparent'; }")
    page.click('#facet-status a.fv-main[aria-label^="Status: failed"]')
    expect(page).to_have_url(re.compile(r"status=failed"))
    settle(page)
    expect(page.locator("#cmd")).to_have_value("status:failed since:all")


def test_command_applies_filters_and_round_trips(page: Page) -> None:
    page.goto(ALL)
    page.keyboard.press("/")
    expect(page.locator("#cmd")).to_be_focused()
    page.keyboard.press("Control+a")
    page.keyboard.type("status:failed,timed_out -trigger:http since:7d sort:duration:desc")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"sort=duration_ms"))
    q = query(page)
    assert q["status"] == ["failed,timed_out"] and q["not_trigger"] == ["http"]
    assert q["from"] == ["-7d"]
    settle(page)
    rows, count = row_ids(page), total(page)
    assert rows
    durations = page.eval_on_selector_all("#rows tr.run", "rs => rs.map(r => r.dataset.run)")
    assert durations == rows
    page.reload()
    expect(page.locator("#cmd")).to_have_value(
        "status:failed,timed_out -trigger:http since:7d sort:duration:desc")
    assert row_ids(page) == rows and total(page) == count
    # the rail agrees with the command: failed and timed out are picked
    expect(page.locator("#facet-status li.fv.on")).to_have_count(2)


def test_command_errors_and_suggestions(page: Page) -> None:
    page.goto(ALL)
    url = page.url
    page.fill("#cmd", "")
    page.keyboard.type("stauts:failed")
    page.keyboard.press("Enter")
    expect(page.locator("#cmd-help .cmd-error")).to_contain_text("unknown key 'stauts'")
    assert page.url == url
    page.fill("#cmd", "")
    page.keyboard.type("status:fa")
    expect(page.locator('#cmd-help [data-token="status:failed"]')).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.locator("#cmd")).to_have_value("status:failed ")
    page.keyboard.type("tool:github.is")
    expect(page.locator('#cmd-help [data-token="tool:github.issues.list"]')).to_be_visible()
    page.click('#cmd-help [data-token="tool:github.issues.list"]')
    expect(page.locator("#cmd")).to_have_value("status:failed tool:github.issues.list ")


def test_a_late_help_answer_leaves_the_commands_error(page: Page) -> None:
    # The as-you-type help is sent before Enter and answers after the command:
    # its answer (which does not judge the token still being typed) must not
    # replace the command's error. Held requests make the order certain.
    page.goto(ALL)
    settle(page)
    held: list[Route] = []
    page.route("**/runs/command?*", lambda route: held.append(route))
    page.fill("#cmd", 'status:"nope"')
    for _ in range(100):
        if any("nope" in r.request.url for r in held):
            break
        # The help that focusing asked for: htmx sends the next only after it.
        while held and "nope" not in held[0].request.url:
            held.pop(0).continue_()
        page.wait_for_timeout(50)
    else:
        raise AssertionError("the help for the typed command was never asked for")
    page.keyboard.press("Enter")
    expect(page.locator("#cmd-help .cmd-error")).to_contain_text("unknown status")
    for route in held:
        route.continue_()
    settle(page)
    expect(page.locator("#cmd-help .cmd-error")).to_contain_text("unknown status")
    expect(page.locator("#cmd-help .cmd-error-at")).to_have_text('status:"nope"')


def test_drag_on_chart_sets_range_and_narrows_list(page: Page) -> None:
    page.goto(ALL)
    before = int(total(page).replace(",", ""))
    box = page.locator("svg.timeline").bounding_box()
    assert box
    y = box["y"] + 50
    page.mouse.move(box["x"] + box["width"] * 0.55, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=6)
    page.mouse.move(box["x"] + box["width"] * 0.85, y, steps=6)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"to=\d{4}-"))
    settle(page)
    q = query(page)
    assert re.match(r"\d{4}-\d\d-\d\dT", q["from"][0]) and q["to"][0] > q["from"][0]
    after = int(total(page).replace(",", ""))
    assert 0 < after < before
    bars = page.eval_on_selector_all("svg.timeline g.bar", "gs => gs.map(g => +g.dataset.count)")
    assert sum(bars) == after
    times = page.eval_on_selector_all("#rows time", "ts => ts.map(t => t.dateTime)")
    assert all(q["from"][0][:19] <= t[:19] < q["to"][0][:19] for t in times)
    expect(page.locator("#cmd")).to_have_value(re.compile(r"after:\S+ before:\S+"))
    page.click("[data-zoom-reset]")
    expect(page).not_to_have_url(re.compile(r"to="))


def test_drawer_opens_from_row_and_from_pasted_url(page: Page, server: Server) -> None:
    page.goto(ALL)
    first = row_ids(page)[0]
    page.click(f"#run-{first} td.c-tools")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", first)
    assert query(page)["run"] == [first]
    page.click('#drawer a.tab:has-text("Events")')
    expect(page).to_have_url(re.compile(r"tab=events"))
    expect(page.locator("#console")).to_be_visible()
    page.goto("/?run=showcase&tab=tools")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", "showcase")
    expect(page.locator("#drawer .wf-row")).to_have_count(8)
    page.click("#tc-tc-4 summary")
    expect(page.locator("#tc-tc-4 .error-block")).to_contain_text("expected 200, got 503")
    page.click("#drawer a.close")
    expect(page.locator("#drawer")).to_be_hidden()
    assert "run" not in query(page)


def test_keyboard_navigation(page: Page) -> None:
    page.goto(ALL)
    settle(page)
    ids = row_ids(page)
    page.keyboard.press("ArrowDown")
    expect(page.locator("#rows tr.run.sel")).to_have_attribute("data-run", ids[0])
    page.keyboard.press("ArrowDown")
    expect(page.locator("#rows tr.run.sel")).to_have_attribute("data-run", ids[1])
    page.keyboard.press("Enter")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", ids[1])
    page.keyboard.press("ArrowDown")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", ids[2])
    page.keyboard.press("ArrowUp")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", ids[1])
    expect(page).to_have_url(re.compile(f"run={ids[1]}"))
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    page.keyboard.press("b")
    expect(page.locator("#rail")).to_be_hidden()
    page.keyboard.press("b")
    expect(page.locator("#rail")).to_be_visible()
    # typing in the command is never taken as a shortcut
    page.click("#cmd")
    page.keyboard.type("b?r")
    expect(page.locator("#rail")).to_be_visible()
    expect(page.locator("#help")).to_be_hidden()
    expect(page.locator("#cmd")).to_have_value(re.compile(r"b\?r$"))
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    settle(page)
    assert row_ids(page) == ids


def test_infinite_scroll_loads_the_next_page(page: Page) -> None:
    page.goto(ALL)
    assert len(row_ids(page)) == 50
    page.locator("#more").scroll_into_view_if_needed()
    expect(page.locator("#rows tr.run")).to_have_count(100)
    expect(page.locator("#shown")).to_have_text("100")
    ids = row_ids(page)
    assert len(set(ids)) == 100


def test_hostile_values_render_as_text(page_and_watch: tuple[Page, Watch]) -> None:
    page, watch = page_and_watch
    page.goto("/?from=&q=xss")
    expect(page.locator("#rows tr.run")).to_have_count(1)
    expect(page.locator("#rows a.open")).to_have_text("xss " + XSS_SCRIPT)
    for tab in ("overview", "tools", "interactions", "events"):
        page.goto(f"/?from=&q=xss&run=xss-run&tab={tab}")
        expect(page.locator("#drawer")).to_have_attribute("data-run-id", "xss-run")
        if tab == "tools":
            page.click("#drawer .wf-row summary")
        body = page.inner_text("#drawer")
        assert XSS_SCRIPT in body or XSS_ATTR in body, tab
    assert page.locator("#drawer img").count() == 0
    assert page.locator("#drawer script").count() == 0
    page.goto("/runs/command?cmd=tool:ht")
    page.goto("/?from=&tool_q=html")
    assert watch.dialogs == []


def test_show_all_fetches_the_rest(page: Page) -> None:
    page.goto("/?from=&run=huge-run")
    code = page.locator("#drawer pre.code")
    expect(code).to_be_visible()
    page.click("#drawer a.show-all")
    expect(page.locator("#drawer .cutbox pre.json")).to_contain_text("line 1199 ")


def test_column_visibility_is_remembered(page: Page) -> None:
    page.goto(ALL)
    page.click("details.columns summary")
    page.uncheck('input[data-col="trigger"]')
    expect(page.locator("td.c-trigger").first).to_be_hidden()
    page.reload()
    expect(page.locator("td.c-trigger").first).to_be_hidden()
    page.click("details.columns summary")
    page.check('input[data-col="trigger"]')
    expect(page.locator("td.c-trigger").first).to_be_visible()


def test_screenshots(page: Page, open_page: Callable[..., Page]) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto("/?from=-7d")
    page.wait_for_timeout(300)
    page.screenshot(path=SCREENSHOTS / "list.png")
    for tab in ("overview", "tools", "interactions", "events"):
        page.goto(f"/?from=-7d&run=showcase&tab={tab}")
        if tab == "tools":
            page.click("#tc-tc-4 summary")
        page.wait_for_timeout(200)
        page.screenshot(path=SCREENSHOTS / f"drawer-{tab}.png")
    page.goto("/?from=-7d&status=failed,timed_out")
    page.click("#cmd")
    page.keyboard.type(" tool:git")
    expect(page.locator('#cmd-help [data-token="tool:github.issues.list"]')).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "command.png")
    dark = open_page(scheme="dark")
    dark.goto("/?from=-7d")
    dark.wait_for_timeout(300)
    dark.screenshot(path=SCREENSHOTS / "dark-list.png")
    dark.goto("/?from=-7d&run=showcase&tab=tools")
    dark.wait_for_timeout(200)
    dark.screenshot(path=SCREENSHOTS / "dark-drawer.png")
    narrow = open_page(width=800)
    narrow.goto("/?from=-7d")
    expect(narrow.locator("#rail")).to_be_hidden()
    narrow.screenshot(path=SCREENSHOTS / "narrow-800.png")
    narrow.keyboard.press("b")
    expect(narrow.locator("#rail")).to_be_visible()
    narrow.screenshot(path=SCREENSHOTS / "narrow-800-rail.png")


def test_tool_search_sort_and_console_paging(page: Page) -> None:
    page.goto(ALL)
    page.fill('input[name="tool_q"]', "slack")
    expect(page.locator("#tool-facet li.fv")).to_have_count(3)
    page.click('#tool-facet a.fv-main[aria-label^="Tool: slack.chat.post"]')
    expect(page).to_have_url(re.compile(r"tool=slack\.chat\.post"))
    page.click("th.c-dur a")
    expect(page).to_have_url(re.compile(r"sort=duration_ms:desc"))
    settle(page)
    shown = page.eval_on_selector_all(
        "#rows tr.run", "rs => rs.map(r => r.querySelector('.c-dur').textContent.trim())")
    assert shown and shown[0] not in ("—", "running")
    page.goto("/?from=&run=showcase&tab=events")
    expect(page.locator("#console .ev")).to_have_count(200)
    page.click("#events-more")
    expect(page.locator("#console .ev")).to_have_count(278)
    page.click('.console-bar a.chip:text("Errors")')
    expect(page).to_have_url(re.compile(r"ev_level=error"))
    expect(page.locator("#console .ev.lv-error")).to_have_count(8)
    assert page.locator("#console .ev:not(.lv-error)").count() == 0


def test_copy_link_and_json(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/?from=&run=showcase")
    page.click("[data-copy-link]")
    expect(page.locator("#toast")).to_have_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == page.url
    page.click("[data-copy-json]")
    expect(page.locator("#toast")).to_have_text("Run copied as JSON")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert '"id": "showcase"' in copied


def test_works_without_javascript(browser: Browser, server: Server) -> None:
    context = browser.new_context(java_script_enabled=False, base_url=server.base)
    page = context.new_page()
    try:
        page.goto(ALL)
        page.fill("#cmd", "status:failed trigger:cli since:all")
        page.press("#cmd", "Enter")
        expect(page).to_have_url(re.compile(r"/\?status=failed&trigger=cli&from=$"))
        rows = row_ids(page)
        assert rows and page.locator("#rows .dot.s-failed").count() == len(rows)
        page.click('#facet-trigger a.fv-main[aria-label^="Trigger: cli"]')
        expect(page).to_have_url(re.compile(r"/\?status=failed&from=$"))
        page.click(f"#run-{row_ids(page)[0]} a.open")
        expect(page.locator("#drawer")).to_be_visible()
    finally:
        context.close()
