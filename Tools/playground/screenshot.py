#!/usr/bin/env python3
"""Screenshots of the playground in headless Chromium (Debian's `chromium`).

Starts charrnn-server on a free loopback port, opens the page, fills the
settings, clicks Generate and waits for the text to finish streaming, takes
the screenshot, then starts a long text, clicks Stop and checks that the
server's stream was freed. Drives Chromium over its DevTools pipe
(--remote-debugging-pipe), so nothing beyond Python's standard library is needed.

    Tools/playground/screenshot.py CHECKPOINT [OUT.png]
"""
import base64, contextlib, json, os, re, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DevTools:
    """Chromium's DevTools protocol over a pipe: NUL-terminated JSON messages."""

    def __init__(self, size=(1280, 900)):
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        # The browser reads commands on fd 3 and writes answers on fd 4.
        def arrange():
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)
        self.process = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--window-size={size[0]},{size[1]}", "about:blank"],
            preexec_fn=arrange, pass_fds=(3, 4, to_browser_read, from_browser_write),  # kept open after arrange()
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def call(self, method, session=True, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url):
        target = self.call("Target.createTarget", session=False, url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", session=False, targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression, seconds=30):
        end = time.time() + seconds
        while time.time() < end:
            if self.evaluate(expression):
                return True
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {expression}")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    def close(self):
        try:
            self.call("Browser.close", session=False)
        except Exception:
            pass
        self.process.wait(timeout=10)


@contextlib.contextmanager
def serving(binary, checkpoint):
    """charrnn-server for `checkpoint` on a free loopback port: yields its base URL, and stops it after."""
    server = subprocess.Popen([binary, "--checkpoint", checkpoint, "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        yield re.search(r"http://\S+/", server.stdout.readline()).group(0)
    finally:
        server.terminate()
        server.wait(timeout=30)


def metric(base, name):
    text = urllib.request.urlopen(base + "metrics").read().decode()
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    checkpoint, out = sys.argv[1], os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "playground.png")
    subprocess.run(["swift", "build", "--package-path", ROOT, "-c", "release", "--product", "charrnn-server"],
                   check=True, stdout=subprocess.DEVNULL)
    binary = subprocess.run(["swift", "build", "--package-path", ROOT, "-c", "release", "--show-bin-path"],
                            check=True, capture_output=True, text=True).stdout.strip() + "/charrnn-server"
    with serving(binary, checkpoint) as base, DevTools() as browser:
        browser.open(base)
        browser.wait_for("document.getElementById('facts').children.length > 0")
        browser.evaluate("""(() => {
            const set = (id, value) => { const e = document.getElementById(id); e.value = value; e.dispatchEvent(new Event('input')); };
            set('prime', 'Anna looked'); set('temperature', '0.8'); set('length', '700'); set('seed', '7');
            document.getElementById('generate').click(); })()""")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        browser.screenshot(out)
        status = browser.evaluate("document.getElementById('status').textContent")
        print(f"screenshot: {out}: {status}")
        shown = browser.evaluate("document.getElementById('output').textContent")
        body = json.dumps({"prime": "Anna looked", "temperature": 0.8, "length": 700, "seed": 7, "top_k": 5}).encode()
        answer = json.load(urllib.request.urlopen(urllib.request.Request(base + "v1/generate", data=body,
                                                                          headers={"Content-Type": "application/json"})))
        if shown != answer["text"]:
            sys.exit("the page shows another text than the API gives for the same settings")
        print("the page's text is the API's for the same settings")

        # Stop: a long text, stopped after a second, must leave the server with no stream.
        browser.evaluate("document.getElementById('length').value = '20000'; document.getElementById('generate').click()")
        browser.wait_for("document.getElementById('output-text').textContent.length > 20")
        time.sleep(1)
        browser.evaluate("document.getElementById('stop').click()")
        browser.wait_for("document.getElementById('status').textContent.startsWith('Stopped')")
        time.sleep(0.3)
        active = metric(base, "charrnn_active_streams")
        stopped = browser.evaluate("document.getElementById('status').textContent")
        print(f"stop: {stopped}; server's active streams now {active:g}")
        if active != 0:
            sys.exit("stop: the server still steps the stopped stream")


if __name__ == "__main__":
    main()
