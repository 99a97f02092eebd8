// sortd's page: sends what is typed to POST / (the API), shows the sorted
// list or the API's error, with the character it names highlighted.
// No framework and no build step; loaded with `defer` from index.html.
"use strict";

// The page's elements, by id.
const [form, input, sortButton, statusLine, result, summary, sorted, copyButton, copied,
    error, errorMessage, errorInput] = [
    "sort-form", "numbers", "sort", "status", "result", "summary", "sorted", "copy", "copied",
    "error", "error-message", "error-input",
].map((id) => document.getElementById(id));

// Characters of the input shown on each side of an error's position.
const CONTEXT = 40;

function isJsonList(text) {
    try {
        return Array.isArray(JSON.parse(text));
    } catch {
        return false;
    }
}

// The request for what was typed, and how a position the API reports maps
// back onto the input. A JSON object, or a list that is valid JSON, is sent
// as the body itself. Anything else (`5, 3, 9`, `[5, 3, 9,]`, `1_000`) is one
// value of a body, `{"numbers": "[5, 3, 9]"}`, in brackets if it has none.
function requestFor(text) {
    const trimmed = text.trim();
    if (trimmed.startsWith("{") || (trimmed.startsWith("[") && isJsonList(trimmed))) {
        return { body: text, kind: "json" };
    }
    const bracketed = trimmed.startsWith("[");
    const value = bracketed ? text : "[" + text + "]";
    return { body: JSON.stringify({ numbers: value }), kind: "value", shift: bracketed ? 0 : 1 };
}

// The UTF-16 index `count` characters (code points) after `index`.
function advance(text, index, count) {
    for (let n = 0; n < count && index < text.length; n++) {
        index += text.codePointAt(index) > 0xffff ? 2 : 1;
    }
    return index;
}

// Where a JSON string literal starting at `index` ends (just after its quote).
function stringEnd(text, index) {
    const literal = /"(?:[^"\\]|\\.)*"/y;
    literal.lastIndex = index;
    return literal.exec(text) ? literal.lastIndex : text.length;
}

// Where the JSON value starting at `index` ends.
function valueEnd(text, index) {
    let depth = 0;
    while (index < text.length) {
        const c = text[index];
        if (c === '"') {
            index = stringEnd(text, index);
            if (depth === 0) {
                return index;
            }
            continue;
        }
        if (c === "[" || c === "{") {
            depth++;
        } else if (c === "]" || c === "}") {
            if (depth === 0) {
                return index;
            }
            depth--;
            if (depth === 0) {
                return index + 1;
            }
        } else if (depth === 0 && (c === "," || /\s/.test(c))) {
            return index;
        }
        index++;
    }
    return index;
}

function skipSpace(text, index) {
    while (index < text.length && /\s/.test(text[index])) {
        index++;
    }
    return index;
}

// Where the last value of `key` starts in a JSON object's text (a key given
// twice keeps its last value, as in the API), or -1.
function valueStart(text, key) {
    let found = -1;
    let index = skipSpace(text, 0) + 1;
    while (index < text.length) {
        index = skipSpace(text, index);
        if (text[index] !== '"') {
            break;
        }
        const keyEnd = stringEnd(text, index);
        const name = JSON.parse(text.slice(index, keyEnd));
        index = skipSpace(text, skipSpace(text, keyEnd) + 1);
        if (name === key) {
            found = index;
        }
        index = skipSpace(text, valueEnd(text, index));
        if (text[index] !== ",") {
            break;
        }
        index++;
    }
    return found;
}

// Where in a JSON string literal starting at `start` the character
// `position` characters into its content is (escapes unescaped, as the API
// counts): [from, to), an escape as a whole.
function stringSpan(text, start, position) {
    let index = start + 1;
    for (let n = 0; index < text.length; ) {
        let next;
        if (text[index] === "\\") {
            const unicode = text[index + 1] === "u";
            const code = unicode ? parseInt(text.slice(index + 2, index + 6), 16) : 0;
            next = index + (unicode ? 6 : 2);
            // A surrogate pair is two escapes for one character.
            if (code >= 0xd800 && code <= 0xdbff && text.startsWith("\\u", next)) {
                next += 6;
            }
        } else {
            next = advance(text, index, 1);
        }
        if (n === position) {
            return [index, next];
        }
        n++;
        index = next;
    }
    return [index, index];
}

// One character from `index`: [index, after it).
function charSpan(text, index) {
    return [index, advance(text, index, 1)];
}

// Where in the typed text the character the API's error names is: [from,
// to), or null. At the end of the text, from === to.
function errorSpan(text, request, problem) {
    if (problem.code === "malformed_json") {
        const at = /line (\d+) column (\d+)/.exec(problem.message || "");
        if (!at) {
            return null;
        }
        const lines = text.split("\n");
        const line = Math.min(Math.max(Number(at[1]), 1), lines.length);
        const before = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0);
        return charSpan(text, before + advance(lines[line - 1], 0, Math.max(Number(at[2]) - 1, 0)));
    }
    if (typeof problem.position !== "number") {
        return null;
    }
    if (request.kind === "value") {
        // The brackets added around the text are not in it.
        return charSpan(text, advance(text, 0, Math.max(problem.position - request.shift, 0)));
    }
    if (problem.key === undefined) {
        // A top-level list: positions count from its first non-space character.
        return charSpan(text, advance(text, skipSpace(text, 0), problem.position));
    }
    const start = valueStart(text, problem.key);
    if (start < 0) {
        return null;
    }
    return text[start] === '"' ? stringSpan(text, start, problem.position)
        : charSpan(text, advance(text, start, problem.position));
}

function showError(text, request, problem) {
    result.hidden = true;
    errorMessage.textContent = problem.message || "The request failed.";
    errorInput.replaceChildren();
    const span = errorSpan(text, request, problem);
    if (span) {
        const [index, end] = span;
        const from = Math.max(index - CONTEXT, 0);
        const to = Math.min(end + CONTEXT, text.length);
        const mark = document.createElement("mark");
        mark.textContent = end > index ? text.slice(index, end) : "\u23ce end";
        errorInput.append((from > 0 ? "\u2026" : "") + text.slice(from, index), mark,
            text.slice(end, to) + (to < text.length ? "\u2026" : ""));
        input.focus();
        input.setSelectionRange(index, end);
    }
    errorInput.hidden = !span;
    error.hidden = false;
}

// How many numbers of a long result are shown at each end: laying out a
// megabyte of text would hold the tab for most of a second. Copy copies all.
const SHOWN_AT_EACH_END = 2500;

// The sorted list's text inside `{"sorted_list":[...]}`, as sent: big
// integers stay exact, as JSON.parse would not keep them.
let sortedText = "";

function showResult(answer, milliseconds) {
    const list = answer.slice(answer.indexOf("[") + 1, answer.lastIndexOf("]"));
    // Where each comma is, to count the numbers and cut a long list.
    const commas = [];
    for (let i = list.indexOf(","); i >= 0; i = list.indexOf(",", i + 1)) {
        commas.push(i);
    }
    const count = list.length > 0 ? commas.length + 1 : 0;
    const spaced = (part) => part.replaceAll(",", ", ");
    sortedText = "[" + spaced(list) + "]";
    let shown = sortedText;
    if (count > 2 * SHOWN_AT_EACH_END) {
        const head = list.slice(0, commas[SHOWN_AT_EACH_END - 1]);
        const tail = list.slice(commas[commas.length - SHOWN_AT_EACH_END] + 1);
        const hidden = (count - 2 * SHOWN_AT_EACH_END).toLocaleString("en");
        shown = `[${spaced(head)},\n \u2026 ${hidden} more (Copy copies them all) \u2026\n${spaced(tail)}]`;
    }
    error.hidden = true;
    summary.textContent = `${count.toLocaleString("en")} ${count === 1 ? "number" : "numbers"}, ` +
        `sorted in ${Math.round(milliseconds).toLocaleString("en")} ms (round trip).`;
    sorted.textContent = shown;
    copied.textContent = "";
    result.hidden = false;
}

async function sort() {
    const text = input.value;
    const order = form.elements.order.value;
    const request = requestFor(text);
    sortButton.disabled = true;
    form.setAttribute("aria-busy", "true");
    statusLine.textContent = "Sorting\u2026";
    const started = performance.now();
    try {
        const response = await fetch(`./?order=${order}`, {
            method: "POST",
            headers: { "Content-Type": "application/json", Accept: "application/json" },
            body: request.body,
        });
        const answer = await response.text();
        if (response.ok) {
            showResult(answer, performance.now() - started);
        } else {
            let problem;
            try {
                problem = JSON.parse(answer).error;
            } catch {
                problem = { message: `The server answered ${response.status} ${response.statusText}.` };
            }
            showError(text, request, problem);
        }
        statusLine.textContent = "";
    } catch {
        showError(text, request, { message: "The server could not be reached; try again." });
        statusLine.textContent = "";
    } finally {
        sortButton.disabled = false;
        form.removeAttribute("aria-busy");
    }
}

// The whole result, however much of it is shown. The clipboard API needs a
// secure context (HTTPS, or localhost); elsewhere the browser's copy command
// copies it from a hidden text box.
async function copyResult() {
    try {
        await navigator.clipboard.writeText(sortedText);
    } catch {
        const box = document.createElement("textarea");
        box.value = sortedText;
        box.setAttribute("readonly", "");
        box.className = "offscreen";
        document.body.append(box);
        box.select();
        const done = document.execCommand("copy");
        box.remove();
        copyButton.focus();
        if (!done) {
            copied.textContent = "Copying was refused by the browser.";
            return;
        }
    }
    copied.textContent = "Copied.";
}

form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!sortButton.disabled) {
        sort();
    }
});

input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
    }
});

copyButton.addEventListener("click", copyResult);
