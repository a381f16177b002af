#!/usr/bin/env python3
"""The playground's Explain view, driven in headless Chromium (Debian's `chromium`).

Starts charrnn-server on a free loopback port and checks, failing with a
message on the first difference:
  1. the unit finder's ranking on planted activations (a unit that is the
     pattern, one that is its negative plus noise, constant and random ones),
     and the built-in patterns on a text with quotes, parentheses, line
     breaks and characters outside the Basic Multilingual Plane;
  2. the view on the model: Explain colours every character by surprise
     (the alphas are the API's surprise in bits / 8), choosing a unit
     recolours them by its activation (the alphas are |h| of the API's trace);
  3. the finder on the model: its best unit for the pattern is the unit with
     the largest |correlation| computed here from the API's activations.
Then, with --screenshot, the view coloured by the finder's best unit with a
character's tooltip shown.

    Tools/playground/explain.py --server BINARY --checkpoint CKPT [--text FILE]
        [--pattern quotes|parentheses|line|word|regex] [--regex RE] [--screenshot OUT.png]
"""
import argparse, base64, json, math, os, re, sys, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screenshot import DevTools, serving  # noqa: E402

DEFAULT_TEXT = ('"Yes," said Anna (she smiled), "I know."\n'
                'He looked at her and said nothing; then, "Why?" he asked.\n'
                'The carriage (a new one) stood at the door.\n')


def fail(message):
    sys.exit("explain: " + message)


def post(base, path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))


def correlation(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def pattern_here(characters, kind, expression):
    """The pattern as the page defines it, computed independently here."""
    if kind == "line":
        columns, column = [], 0
        for character in characters:
            columns.append(column)
            column = 0 if character == "\n" else column + 1
        return columns
    regex = {"quotes": r'"[^"]*"|“[^”]*”|«[^»]*»', "parentheses": r"\([^()]*\)",
             "word": r"(?<!['’])(?<![^\W_])[^\W_]"}.get(kind, expression)
    text = "".join(characters)  # Python indexes by code point: one per character
    marks = [0] * len(characters)
    for match in re.finditer(regex, text):
        for i in range(match.start(), match.end()):
            marks[i] = 1
    return marks


def alphas(browser):
    """Each character's background alpha in the view (0 for transparent)."""
    colours = browser.evaluate("[...document.querySelectorAll('#explain-view span')].map(s => getComputedStyle(s).backgroundColor)")
    result = []
    for colour in colours:
        parts = re.findall(r"[\d.]+", colour)
        result.append(float(parts[3]) if len(parts) == 4 else (0.0 if colour == "rgba(0, 0, 0, 0)" else 1.0))
    return result


def check_pure_parts(browser):
    planted = browser.evaluate("""(() => {
        const T = 400, pattern = [], h = [[], []];
        let seed = 7; const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
        for (let t = 0; t < T; t++) pattern.push(Math.floor(t / 13) % 2);
        for (let l = 0; l < 2; l++) for (let u = 0; u < 6; u++) h[l].push(Array.from({ length: T }, () => random() * 2 - 1));
        h[1][4] = pattern.map((v) => 0.8 * v - 0.4);                        // the pattern itself
        h[0][2] = pattern.map((v) => -0.6 * v + 0.3 * (random() - 0.5));    // its negative, noisy
        h[0][5] = new Array(T).fill(0.5);                                    // constant: r = 0
        return charrnnExplain.rankUnits(h, [10, 11, 12, 13, 14, 15], pattern, 12);
    })()""")
    order = [(entry["layer"], entry["unit"]) for entry in planted]
    if order[:2] != [(1, 14), (0, 12)]:
        fail(f"planted activations: the finder ranked {order[:3]}, not layer 2 unit 14 then layer 1 unit 12")
    if abs(planted[0]["r"] - 1) > 1e-9 or planted[1]["r"] > -0.9:
        fail(f"planted activations: r = {planted[0]['r']}, {planted[1]['r']} (expected 1 and below -0.9)")
    if (0, 15) != order[-1] or planted[-1]["r"] != 0:
        fail(f"planted activations: the constant unit should rank last with r = 0, got {planted[-1]}")
    print(f"finder on planted activations: {order[:2]} first (r = {planted[0]['r']:.3f}, {planted[1]['r']:.3f}), the constant unit last")

    text = 'a "b🙂c" (d e)\nfg “h”'
    characters = list(text)
    for kind in ("quotes", "parentheses", "line", "word"):
        page = browser.evaluate(f"charrnnExplain.patternSeries({json.dumps(characters)}, {json.dumps(kind)}, '')")
        here = pattern_here(characters, kind, "")
        if page != here:
            fail(f"pattern {kind} on {text!r}: the page marks {page}, expected {here}")
    regex = browser.evaluate(f"charrnnExplain.patternSeries({json.dumps(characters)}, 'regex', '🙂.')")
    if regex != [1 if i in (4, 5) else 0 for i in range(len(characters))]:
        fail(f"a regular expression's match is not mapped to characters: {regex}")
    print("built-in patterns and a regular expression mark the expected characters (a character beyond the BMP included)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="the charrnn-server binary")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--text", help="a UTF-8 file to explain (default: a short text with quotes and parentheses)")
    parser.add_argument("--pattern", default="quotes", choices=["quotes", "parentheses", "line", "word", "regex"])
    parser.add_argument("--regex", default="", help="the expression for --pattern regex")
    parser.add_argument("--screenshot", help="write a PNG of the view coloured by the finder's best unit")
    parser.add_argument("--hover", type=int, default=None, help="the character whose tooltip the screenshot shows")
    arguments = parser.parse_args()
    text = open(arguments.text, encoding="utf-8").read() if arguments.text else DEFAULT_TEXT

    with serving(arguments.server, arguments.checkpoint) as base, DevTools(size=(1280, 1400)) as browser:
        model = json.load(urllib.request.urlopen(base + "v1/model"))
        text = text.replace("\r\n", "\n")[: model["server"]["max_trace_characters"]]
        browser.open(base)
        browser.wait_for("window.charrnnModel !== undefined && window.charrnnExplain !== undefined")
        check_pure_parts(browser)

        # The view on the model, against the API's own trace.
        api = post(base, "v1/trace", {"text": text, "units": "all", "top": 5})
        characters = api["characters"]
        browser.evaluate(f"document.getElementById('explain-text').value = {json.dumps(text)}; "
                         "document.getElementById('explain-run').click()")
        browser.wait_for(f"document.querySelectorAll('#explain-view span').length === {len(characters)} && "
                         "document.getElementById('explain-status').textContent.includes('bits/char')", seconds=120)
        shown = "".join(browser.evaluate("[...document.querySelectorAll('#explain-view span')].map(s => s.textContent)"))
        if shown != text:
            fail("the view shows another text than the one explained")
        surprise_alphas = alphas(browser)
        for t, (alpha, surprise) in enumerate(zip(surprise_alphas, api["surprise"])):
            expected = 0.0 if surprise is None else min(surprise / math.log(2) / 8, 1)
            if abs(alpha - expected) > 0.006:  # Chromium keeps alpha in 8 bits
                fail(f"character {t}: coloured with alpha {alpha}, but its surprise is {expected * 8:.3f} bits (alpha {expected:.3f})")
        status = browser.evaluate("document.getElementById('explain-status').textContent")
        if f"{api['bits_per_character']:.3f} bits/char" not in status:
            fail(f"the status says {status!r}; the API's mean surprise is {api['bits_per_character']:.3f} bits/char")
        print(f"view: {len(characters)} characters coloured by surprise as the API's trace gives it ({status})")

        layer, unit = min(1, api["layers"] - 1), 7 % len(api["units"])
        browser.evaluate(f"charrnnExplain.choose({layer}, {api['units'][unit]})")
        unit_alphas = alphas(browser)
        series = api["h"][layer][unit]
        for t, (alpha, value) in enumerate(zip(unit_alphas, series)):
            if abs(alpha - min(abs(value), 1)) > 0.006:
                fail(f"character {t}: coloured with alpha {alpha} by layer {layer + 1} unit {api['units'][unit]}, whose h is {value}")
        if unit_alphas == surprise_alphas:
            fail("choosing a unit did not change the colours")
        print(f"choosing layer {layer + 1} unit {api['units'][unit]} recolours the text by its activation")

        # The finder on the model, against correlations computed here.
        pattern = pattern_here(characters, arguments.pattern, arguments.regex)
        browser.evaluate(f"document.getElementById('finder-pattern').value = {json.dumps(arguments.pattern)}; "
                         f"document.getElementById('finder-regex').value = {json.dumps(arguments.regex)}; "
                         "document.getElementById('finder-run').click()")
        browser.wait_for("document.querySelectorAll('#finder-results li').length > 0")
        listed = browser.evaluate("[...document.querySelectorAll('#finder-results li')].map(li => li.textContent)")
        scores = sorted(((abs(correlation(series, pattern)), l, api["units"][u], correlation(series, pattern))
                         for l, layer_h in enumerate(api["h"]) for u, series in enumerate(layer_h)), key=lambda s: (-s[0], s[1], s[2]))
        best = scores[0]
        expected_first = f"layer {best[1] + 1} unit {best[2]}: r = {'+' if best[3] >= 0 else '−'}{abs(best[3]):.3f}"
        if listed[0] != expected_first:
            fail(f"the finder lists {listed[0]!r} first; the largest |r| computed here is {expected_first!r}")
        print(f"finder ({arguments.pattern}) on {len(scores)} units: " + "; ".join(listed[:5]))

        if arguments.screenshot:
            hover = arguments.hover if arguments.hover is not None else max(range(1, len(characters)), key=lambda t: api["h"][best[1]][api["units"].index(best[2])][t])
            box = browser.evaluate(f"(() => {{ const s = document.querySelectorAll('#explain-view span')[{hover}]; s.scrollIntoView({{block: 'center'}}); const r = s.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
            browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
            browser.wait_for("!document.getElementById('explain-tip').hidden")
            section = browser.evaluate("(() => { const r = document.getElementById('explain').getBoundingClientRect(); return [r.x, r.y + window.scrollY, r.width, r.height]; })()")
            data = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                clip={"x": section[0] - 8, "y": section[1] - 8, "width": section[2] + 16, "height": section[3] + 16, "scale": 1})["data"]
            with open(arguments.screenshot, "wb") as file:
                file.write(base64.b64decode(data))
            print(f"screenshot: {arguments.screenshot} (tooltip of character {hover})")


if __name__ == "__main__":
    main()
