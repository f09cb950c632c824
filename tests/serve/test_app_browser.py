"""The page at / in a real headless chromium (selenium): speech, file and microphone transcription, chat.

Needs Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`);
skips with that reason when they are absent. The microphone is chromium's fake capture device.
"""

from __future__ import annotations

import base64
import io
import os
import shutil

import httpx
import pytest
import soundfile as sf

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in tokunify's dev extra")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tokunify.tasks.conversation import Conversation, Message  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs chromium + chromedriver (apt-get install -y chromium chromium-driver)",
    ),
]
WAIT_S = 90


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):  # fmt: skip
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def _wait(driver, script: str):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: d.execute_script(script)
    )


def test_page_speaks_transcribes_records_and_chats(server, browser, wav_file, tmp_path):
    d = browser
    d.get(server.url + "/")
    _wait(d, "return document.body.dataset.ready === '1'")
    d.find_element(By.ID, "temperature").send_keys("0")
    d.find_element(By.ID, "max-new-tokens").send_keys("40")

    # type text, hear speech: an <audio> element with non-empty WAV data that the browser decodes
    d.find_element(By.ID, "tts-text").send_keys("the red cat sat on the mat")
    d.find_element(By.ID, "tts-go").click()
    _wait(d, "return document.getElementById('tts-audio').dataset.bytes !== undefined")
    assert int(d.find_element(By.ID, "tts-audio").get_attribute("data-bytes")) > 44
    duration = _wait(d, "const a = document.getElementById('tts-audio'); return a.readyState >= 1 && a.duration > 0 && a.duration")  # fmt: skip
    assert duration > 0
    assert "err" not in d.find_element(By.ID, "tts-info").get_attribute("class")

    # upload a file, see the transcript: the same text the API gives for that file
    d.find_element(By.ID, "asr-file").send_keys(str(wav_file))
    d.find_element(By.ID, "asr-go").click()
    _wait(d, "return document.getElementById('transcript').dataset.done === '1'")
    shown = d.find_element(By.ID, "transcript")
    assert "err" not in shown.get_attribute("class"), shown.text
    api = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.wav", wav_file.read_bytes())},
                     data={"model": "tiny", "temperature": "0", "max_new_tokens": "40"}, timeout=60).json()["text"]  # fmt: skip
    assert shown.get_attribute("data-text") == api
    assert shown.text == (api or "(empty transcript)")

    # record from the (fake) microphone: MediaRecorder -> WAV in the page -> transcript
    d.execute_script("document.getElementById('transcript').removeAttribute('data-done')")
    d.find_element(By.ID, "rec").click()
    _wait(d, "return document.getElementById('rec').textContent.includes('Stop')")
    d.execute_script("return new Promise(r => setTimeout(r, 1200))")
    d.find_element(By.ID, "rec").click()
    _wait(d, "return document.getElementById('transcript').dataset.done === '1'")
    assert "err" not in d.find_element(By.ID, "transcript").get_attribute("class")
    assert d.find_element(By.ID, "asr-audio").get_attribute("src").startswith("blob:")

    # chat: two turns stay in the history, the reply comes with speech
    for text in ("hello there", "what is two plus three"):
        d.find_element(By.ID, "chat-text").send_keys(text)
        d.find_element(By.ID, "chat-send").click()
        n = d.execute_script("return document.querySelectorAll('.msg.user').length")
        _wait(d, f"return document.querySelectorAll('.msg.assistant').length >= {n}")
    replies = d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    assert len(d.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2 and len(replies) == 2
    assert all("error" not in r.text for r in replies)
    assert replies[-1].find_elements(By.TAG_NAME, "audio")
    if os.environ.get("TOKUNIFY_SCREENSHOT"):
        d.save_screenshot(os.environ["TOKUNIFY_SCREENSHOT"])


# a request log in the page: the body of every chat request it sends
RECORD_CHAT_REQUESTS = """
window.chatRequests = [];
const send = window.fetch;
window.fetch = (url, opts) => {
  if (String(url).endsWith("/v1/chat/completions")) window.chatRequests.push(JSON.parse(opts.body));
  return send(url, opts);
};
"""


def _as_conversation(chat, messages: list[dict]) -> Conversation:  # type: ignore[no-untyped-def]
    """The page's OpenAI messages as the server reads them: text, and recorded WAV as speech."""
    turns = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            turns.append(Message(m["role"], content))
            continue
        parts: list = []
        for p in content:
            if p["type"] == "text":
                parts.append(p["text"])
            else:
                wav, sr = sf.read(io.BytesIO(base64.b64decode(p["input_audio"]["data"])), dtype="float32")  # fmt: skip
                parts += chat.encode_audio([wav if wav.ndim == 1 else wav.mean(axis=1)], sr)
        turns.append(Message(m["role"], parts))
    return Conversation(turns)


def test_page_chat_keeps_its_history_through_the_server(server, browser):
    """Three turns (typed, recorded, typed): each request carries every earlier turn (the page's
    request log), the server's prompt for it is the chat template's rendering of that whole history
    (the reply's prompt tokens, shown on the page), and the page shows the three replies. A turn
    the server refuses (special-token text) is shown as an error and left out of the history."""
    d = browser
    d.get(server.url + "/")
    _wait(d, "return document.body.dataset.ready === '1'")
    d.execute_script(RECORD_CHAT_REQUESTS)
    d.find_element(By.ID, "temperature").send_keys("0")
    d.find_element(By.ID, "max-new-tokens").send_keys("12")

    def replied(n: int) -> None:
        _wait(d, f"return document.querySelectorAll('.msg.assistant').length >= {n}")

    d.find_element(By.ID, "chat-text").send_keys("my cat is red")
    d.find_element(By.ID, "chat-send").click()
    replied(1)
    d.find_element(By.ID, "chat-text").send_keys("hi <|eos|> there")
    d.find_element(By.ID, "chat-send").click()
    replied(2)
    d.find_element(By.ID, "chat-rec").click()  # the fake microphone
    _wait(d, "return document.getElementById('chat-rec').textContent.includes('Stop')")
    d.execute_script("return new Promise(r => setTimeout(r, 1200))")
    d.find_element(By.ID, "chat-rec").click()
    replied(3)
    d.find_element(By.ID, "chat-text").send_keys("what colour is my cat?")
    d.find_element(By.ID, "chat-send").click()
    replied(4)

    replies = d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    refused = replies.pop(1)
    assert refused.text.startswith("error: ") and "<|eos|>" in refused.text
    assert len(replies) == 3 and all("error" not in r.text for r in replies), [r.text for r in replies]  # fmt: skip
    assert all(r.find_elements(By.TAG_NAME, "audio") for r in replies)  # spoken replies
    sent = [b["messages"] for b in d.execute_script("return window.chatRequests")]
    assert [len(m) for m in sent] == [1, 3, 3, 5]
    sent.pop(1)  # the refused turn's request
    assert [m["role"] for m in sent[2]] == ["user", "assistant", "user", "assistant", "user"]
    assert sent[1][:1] == sent[0] and sent[2][:3] == sent[1]  # every earlier turn, as it was sent
    assert sent[1][2]["content"][0]["type"] == "input_audio"  # the recording
    chat = server.engine.chat
    for i in (1, 2):
        conv = _as_conversation(chat, sent[i])
        shown = int(replies[i].get_attribute("data-prompt-tokens"))
        assert shown == len(chat.prompt(conv, "speech"))  # the whole history, rendered
        assert shown > len(chat.prompt(Conversation(conv.messages[-1:]), "speech"))


def test_page_asks_for_the_api_key_once_and_keeps_it_in_the_tab(serve_with, browser):
    d = browser
    with serve_with(api_key="page-key-7") as s:
        d.get(s.url + "/")
        _wait(d, "return document.body.dataset.ready === '1'")
        assert d.find_element(By.ID, "key-box").is_displayed()
        d.find_element(By.ID, "api-key").send_keys("page-key-7")
        d.find_element(By.ID, "key-save").click()
        assert not d.find_element(By.ID, "key-box").is_displayed()
        assert d.execute_script("return sessionStorage.getItem('tokunify-api-key')") == "page-key-7"

        def speak() -> str:
            d.execute_script("document.getElementById('tts-audio').removeAttribute('data-bytes'); document.getElementById('tts-info').textContent = ''")  # fmt: skip
            d.find_element(By.ID, "tts-text").clear()
            d.find_element(By.ID, "tts-text").send_keys("the cat")
            d.find_element(By.ID, "tts-go").click()
            _wait(d, "const i = document.getElementById('tts-info'); return i.textContent !== '' && !i.textContent.startsWith('synth')")  # fmt: skip
            return d.find_element(By.ID, "tts-info").get_attribute("class") or ""

        assert "err" not in speak()
        assert int(d.find_element(By.ID, "tts-audio").get_attribute("data-bytes")) > 44
        # a reload in the same tab keeps the key: no question, requests still pass
        d.refresh()
        _wait(d, "return document.body.dataset.ready === '1'")
        assert not d.find_element(By.ID, "key-box").is_displayed()
        assert "err" not in speak()
        # a wrong key is refused (401) and asked again
        d.execute_script("sessionStorage.setItem('tokunify-api-key', 'wrong')")
        assert "err" in speak()
        assert "wrong API key" in d.find_element(By.ID, "tts-info").text
        assert d.find_element(By.ID, "key-box").is_displayed()
        assert d.execute_script("return sessionStorage.getItem('tokunify-api-key')") is None
