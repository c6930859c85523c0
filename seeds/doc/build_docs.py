"""Build the shipped documents under ``seeds/doc/`` (run from anywhere; needs matplotlib).

    python seeds/doc/build_docs.py

- ``markdown/python_execution_model.md``: the Python Language Reference chapters
  "Execution model" and "The import statement" (from ``pydoc_data.topics``, which ships
  with every CPython), converted to Markdown, plus one figure.
- ``html/python_compound_statements.html``: the chapter "Compound statements" as HTML
  with h1–h3 headings, a summary table and a figure.
- ``pdf/python_format_strings.pdf``: "Format String Syntax" and "String and Bytes
  literals" typeset into a PDF written by hand (Courier/Helvetica, no dependencies),
  with bookmarks for every heading.
- ``xml/northwind_trails_report_2024/``: an annual report in the AgentFlow
  ``outline.xml`` / ``all_content.xml`` layout with ``figures/image_<id>.png``, whose
  numbers are computed from ``seeds/text2sql/retail.sqlite``.

The text is the Python documentation of the interpreter that runs the script (the
committed files were made with CPython 3.11); rebuilding with another version may
change a few sentences, so the benchmark test reads the committed files.
"""
from __future__ import annotations

import html
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

from pydoc_data.topics import topics

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
_UNDER = {"*": 1, "=": 2, "-": 3, "~": 4}


def rst_blocks(text: str):
    """Yield ("heading", level, title) and ("text", lines) from pydoc topic text."""
    lines = text.splitlines()
    buf: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"([*=\-~])\1{2,}", nxt) and len(nxt) == len(line):
            if buf:
                yield ("text", buf)
                buf = []
            yield ("heading", _UNDER[nxt[0]], line.strip())
            i += 2
            continue
        buf.append(line)
        i += 1
    if buf:
        yield ("text", buf)


# -- Markdown ----------------------------------------------------------------------------
def build_markdown() -> Path:
    out = HERE / "markdown" / "python_execution_model.md"
    (out.parent / "figures").mkdir(parents=True, exist_ok=True)
    md = []
    for topic, shift in (("execmodel", 0), ("import", 1)):
        for kind, *rest in rst_blocks(topics[topic]):
            if kind == "heading":
                level, title = rest
                md += [f"{'#' * min(6, level + shift)} {title}", ""]
                if not shift and level == 1:
                    md += ["*From the Python Language Reference (CPython's pydoc_data.topics), converted to "
                           "Markdown by seeds/doc/build_docs.py.*", ""]
                if topic == "execmodel" and title == "Resolution of names":
                    md += ["![Name resolution order: local, enclosing, global, builtins](figures/name_resolution.png "
                           "\"Figure 1: the scopes searched when a name is resolved\")", ""]
            else:
                md += _fence_code(rest[0])
    out.write_text("\n".join(md).rstrip() + "\n", encoding="utf-8")
    _scope_figure(out.parent / "figures" / "name_resolution.png")
    return out


def _fence_code(lines: list[str]) -> list[str]:
    """Put indented grammar and interactive examples into fenced code blocks."""
    out, block = [], []

    def flush():
        if block and any("::=" in b or b.strip().startswith(">>>") for b in block):
            out.extend(["```", *[b[3:] if b.startswith("   ") else b for b in block], "```"])
        else:
            out.extend(block)
        block.clear()

    for line in lines:
        if line.startswith("   ") and (block or (out and not out[-1].strip()) or not out):
            block.append(line)
        else:
            if block and not line.strip():
                block.append(line)
                continue
            flush()
            out.append(line)
    flush()
    return out


def _scope_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=80)
    for k, (label, color) in enumerate([("Builtins", "#dfe7f2"), ("Global (module)", "#c3d3ea"),
                                        ("Enclosing functions", "#9fbbe0"), ("Local (function)", "#6f98cf")]):
        ax.add_patch(plt.Rectangle((k * 0.6, k * 0.45), 10 - k * 1.2, 6 - k * 0.9, color=color))
        ax.text(k * 0.6 + 0.2, k * 0.45 + 6 - k * 0.9 - 0.4, label, fontsize=9, va="top")
    ax.annotate("lookup order", xy=(8.8, 0.5), xytext=(8.8, 4.6), ha="center", fontsize=8,
                arrowprops=dict(arrowstyle="->"))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6)
    ax.axis("off")
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# -- HTML --------------------------------------------------------------------------------
def build_html() -> Path:
    out = HERE / "html" / "python_compound_statements.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    body, statements = [], []
    for kind, *rest in rst_blocks(topics["compound"]):
        if kind == "heading":
            level, title = rest
            body.append(f"<h{level}>{html.escape(title)}</h{level}>")
            m = re.match(r'The "([a-z ]+)" statement', title)
            if m:
                statements.append(m.group(1))
            if level == 1:
                body.append('<figure><img src="figures/statement_lengths.png" alt="Bar chart of the length of each '
                            'statement section"><figcaption>Figure 1: length of each section of this chapter, in '
                            'words</figcaption></figure>')
                body.append("<table><tr><th>Statement</th><th>Header keyword</th><th>Clauses</th></tr>"
                            "<tr><td>if</td><td>if</td><td>elif, else</td></tr>"
                            "<tr><td>while</td><td>while</td><td>else</td></tr>"
                            "<tr><td>for</td><td>for</td><td>else</td></tr>"
                            "<tr><td>try</td><td>try</td><td>except, except*, else, finally</td></tr>"
                            "<tr><td>with</td><td>with</td><td>(none)</td></tr>"
                            "<tr><td>match</td><td>match</td><td>case</td></tr></table>")
        else:
            for para in "\n".join(rest[0]).split("\n\n"):
                para = para.strip("\n")
                if not para.strip():
                    continue
                if para.startswith("   ") and ("::=" in para or ">>>" in para or para.count("\n") > 0 and
                                                all(p.startswith("   ") for p in para.splitlines() if p.strip())):
                    body.append(f"<pre>{html.escape(_dedent(para))}</pre>")
                else:
                    body.append(f"<p>{html.escape(' '.join(para.split()))}</p>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Compound statements — The Python Language Reference</title>"
            "<style>body{font-family:sans-serif;max-width:50em;margin:auto}</style>"
            "<script>console.log('not part of the text')</script></head>\n<body>\n"
            "<nav><a href=\"#\">Python</a> » Language Reference</nav>\n<main>\n" + "\n".join(body) +
            "\n</main>\n<footer>Generated by seeds/doc/build_docs.py from the Python Language Reference "
            "(pydoc_data.topics).</footer>\n</body></html>\n")
    out.write_text(page, encoding="utf-8")
    _lengths_figure(out.parent / "figures" / "statement_lengths.png")
    return out


def _dedent(text: str) -> str:
    return "\n".join(line[3:] if line.startswith("   ") else line for line in text.splitlines())


def _lengths_figure(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    names, sizes, cur = [], [], None
    for kind, *rest in rst_blocks(topics["compound"]):
        if kind == "heading" and rest[0] == 2:
            cur = rest[1].replace("The ", "").replace(" statement", "")
            names.append(cur)
            sizes.append(0)
        elif kind == "text" and cur:
            sizes[-1] += len(" ".join(rest[0]).split())
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    ax.barh(names[::-1], sizes[::-1], color="#4a78b5")
    ax.set_xlabel("words")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# -- PDF (written by hand) ---------------------------------------------------------------
class _PdfWriter:
    """Lay out headings and Courier text on Letter pages; bookmarks for headings."""

    W, H, MARGIN, SIZE, LEAD, COLS = 612, 792, 54, 9, 11.5, 92

    def __init__(self):
        self.pages: list[list[str]] = []
        self.marks: list[tuple[int, str, int, float]] = []  # level, title, page, y
        self.y = 0.0
        self.new_page()

    def new_page(self):
        self.pages.append([])
        self.y = self.H - self.MARGIN

    def _room(self, need: float):
        if self.y - need < self.MARGIN:
            self.new_page()

    def heading(self, level: int, title: str):
        size = {1: 16, 2: 13, 3: 11}.get(level, 10)
        self._room(size * 3)
        self.y -= size * 1.2
        self.marks.append((level, title, len(self.pages) - 1, self.y + size * 1.5))
        self.pages[-1].append(f"BT /F2 {size} Tf {self.MARGIN} {self.y:.1f} Td ({_pdf_str(title)}) Tj ET")
        self.y -= size * 0.8

    def line(self, text: str):
        self._room(self.LEAD)
        self.y -= self.LEAD
        if text.strip():
            self.pages[-1].append(f"BT /F1 {self.SIZE} Tf {self.MARGIN} {self.y:.1f} Td ({_pdf_str(text)}) Tj ET")

    def text(self, lines: list[str]):
        import textwrap

        for raw in lines:
            indent = len(raw) - len(raw.lstrip())
            for piece in textwrap.wrap(raw, self.COLS, subsequent_indent=" " * indent, break_on_hyphens=False) or [""]:
                self.line(piece)

    def write(self, path: Path, title: str):
        objs: dict[int, bytes] = {}
        n_pages = len(self.pages)
        page_ids = [7 + 2 * i for i in range(n_pages)]
        objs[4] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"
        objs[5] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
        objs[6] = f"<< /Title ({_pdf_str(title)}) /Producer (AgentFlow seeds/doc/build_docs.py) >>".encode()
        for i, content in enumerate(self.pages):
            stream = ("\n".join(content) + f"\nBT /F1 8 Tf {self.W / 2 - 10} 30 Td ({i + 1}) Tj ET").encode("latin-1")
            objs[page_ids[i]] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {self.W} {self.H}] "
                                 f"/Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> "
                                 f"/Contents {page_ids[i] + 1} 0 R >>").encode()
            objs[page_ids[i] + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objs[2] = f"<< /Type /Pages /Count {n_pages} /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] >>".encode()
        # Outline tree: parent of a mark is the closest earlier mark with a smaller level.
        first_id = 7 + 2 * n_pages
        ids = [first_id + k for k in range(len(self.marks))]
        parent = []
        for k, (level, *_rest) in enumerate(self.marks):
            p = next((j for j in range(k - 1, -1, -1) if self.marks[j][0] < level), None)
            parent.append(p)
        children = {p: [k for k in range(len(self.marks)) if parent[k] == p] for p in [None, *range(len(self.marks))]}

        def count(k):
            return sum(1 + count(c) for c in children[k])

        for k, (level, name, page, y) in enumerate(self.marks):
            sib = children[parent[k]]
            pos = sib.index(k)
            entry = [f"/Title ({_pdf_str(name)})", f"/Parent {3 if parent[k] is None else ids[parent[k]]} 0 R",
                     f"/Dest [{page_ids[page]} 0 R /XYZ 0 {y:.1f} 0]"]
            if pos > 0:
                entry.append(f"/Prev {ids[sib[pos - 1]]} 0 R")
            if pos + 1 < len(sib):
                entry.append(f"/Next {ids[sib[pos + 1]]} 0 R")
            if children[k]:
                entry += [f"/First {ids[children[k][0]]} 0 R", f"/Last {ids[children[k][-1]]} 0 R", f"/Count {count(k)}"]
            objs[ids[k]] = ("<< " + " ".join(entry) + " >>").encode()
        top = children[None]
        objs[3] = (f"<< /Type /Outlines /First {ids[top[0]]} 0 R /Last {ids[top[-1]]} 0 R /Count {count(None)} >>"
                   if top else "<< /Type /Outlines /Count 0 >>").encode()
        objs[1] = b"<< /Type /Catalog /Pages 2 0 R /Outlines 3 0 R /PageMode /UseOutlines >>"
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = {}
        for num in sorted(objs):
            offsets[num] = len(out)
            out += b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n"
        xref = len(out)
        size = max(objs) + 1
        out += b"xref\n0 %d\n0000000000 65535 f \n" % size
        for num in range(1, size):
            out += b"%010d 00000 n \n" % offsets[num]
        out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
        path.write_bytes(bytes(out))


def _pdf_str(text: str) -> str:
    raw = text.encode("cp1252", errors="replace")
    out = []
    for b in raw:
        ch = chr(b)
        if ch in "\\()":
            out.append("\\" + ch)
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def build_pdf() -> Path:
    out = HERE / "pdf" / "python_format_strings.pdf"
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf = _PdfWriter()
    for topic in ("formatstrings", "strings"):
        first = True
        for kind, *rest in rst_blocks(topics[topic]):
            if kind == "heading":
                if rest[0] == 1 and not first:
                    pdf.new_page()
                first = False
                pdf.heading(*rest)
            else:
                lines = rest[0]
                while lines and not lines[0].strip():
                    lines = lines[1:]
                pdf.text(lines)
    pdf.write(out, "Format String Syntax and String Literals (Python Language Reference)")
    return out


# -- AgentFlow XML layout: an annual report computed from the retail database ------------
def build_report() -> Path:
    folder = HERE / "xml" / "northwind_trails_report_2024"
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(f"file:{REPO / 'seeds/text2sql/retail.sqlite'}?mode=ro", uri=True)
    q = lambda sql, *a: con.execute(sql, a).fetchall()  # noqa: E731
    rev = {y: q("SELECT ROUND(SUM(total),2), COUNT(*) FROM order_totals WHERE status='completed' "
                "AND order_date LIKE ?", f"{y}-%")[0] for y in (2023, 2024)}
    growth = 100 * (rev[2024][0] - rev[2023][0]) / rev[2023][0]
    online = q("SELECT ROUND(100.0*SUM(channel='online')/COUNT(*),1) FROM orders WHERE order_date LIKE '2024-%'")[0][0]
    stores = q("SELECT s.name, s.city, ROUND(SUM(t.total),2), COUNT(*) FROM order_totals t JOIN stores s "
               "ON s.store_id=t.store_id WHERE t.status='completed' AND t.order_date LIKE '2024-%' "
               "GROUP BY s.store_id ORDER BY 3 DESC")
    online_rev = q("SELECT ROUND(SUM(total),2), COUNT(*) FROM order_totals WHERE status='completed' "
                   "AND channel='online' AND order_date LIKE '2024-%'")[0]
    months = {y: dict(q("SELECT CAST(substr(order_date,6,2) AS INT), SUM(total) FROM order_totals "
                        "WHERE status='completed' AND order_date LIKE ? GROUP BY 1", f"{y}-%")) for y in (2023, 2024)}
    month_names = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                   "October", "November", "December"]
    peak = max(months[2024], key=months[2024].get)
    low = min(months[2024], key=months[2024].get)
    cats = q("SELECT c.name, ROUND(SUM(i.quantity*i.unit_price*(1-i.discount)),2), SUM(i.quantity) FROM order_items i "
             "JOIN orders o ON o.order_id=i.order_id JOIN products p ON p.product_id=i.product_id "
             "JOIN categories c ON c.category_id=p.category_id WHERE o.status='completed' "
             "AND o.order_date LIKE '2024-%' GROUP BY c.category_id ORDER BY 2 DESC")
    top_products = q("SELECT p.name, SUM(i.quantity) FROM order_items i JOIN orders o ON o.order_id=i.order_id "
                     "JOIN products p ON p.product_id=i.product_id WHERE o.status='completed' "
                     "AND o.order_date LIKE '2024-%' GROUP BY p.product_id ORDER BY 2 DESC, p.name LIMIT 5")
    tiers = q("SELECT loyalty_tier, COUNT(*) FROM customers GROUP BY 1 ORDER BY 2 DESC")
    n_customers = sum(t[1] for t in tiers)
    active = q("SELECT COUNT(DISTINCT customer_id) FROM orders WHERE order_date LIKE '2024-%'")[0][0]
    status = dict(q("SELECT status, COUNT(*) FROM orders WHERE order_date LIKE '2024-%' GROUP BY 1"))
    n_orders_2024 = sum(status.values())
    bend = next(s for s in stores if s[1] == "Bend")
    con.close()

    money = lambda v: f"${v:,.2f}"  # noqa: E731
    table = lambda head, rows: "<table>" + "<tr>" + "".join(f"<td>{h}</td>" for h in head) + "</tr>" + "".join(  # noqa: E731
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    sections = [
        ("Northwind Trails Annual Report 2024", True, 1, [
            ("p", "Northwind Trails operates six outdoor-equipment stores in Oregon, Washington, Idaho, Colorado and "
                  "Utah, and an online shop. This report reviews the fiscal year 2024 (January 1 to December 31, "
                  "2024) and compares it with 2023. All figures are computed from the company's sales database "
                  "and count completed orders only, after line-item discounts."),
        ]),
        ("1 Highlights", False, 1, [
            ("p", f"Revenue from completed orders reached {money(rev[2024][0])} in 2024, from {rev[2024][1]:,} "
                  f"completed orders, compared with {money(rev[2023][0])} in 2023 "
                  f"({growth:+.1f}% year over year)."),
            ("p", f"Online orders made up {online}% of all orders placed in 2024. The Bend store, opened on "
                  f"August 5, 2023, completed its first full year with {money(bend[2])} in revenue."),
        ]),
        ("2 Store Performance", False, 2, [
            ("p", f"{stores[0][0]} was the strongest store in 2024 with {money(stores[0][2])} in completed "
                  f"in-store revenue from {stores[0][3]} orders, followed by {stores[1][0]} "
                  f"({money(stores[1][2])}). The smallest contribution came from {stores[-1][0]}."),
            ("table", "0", "Table 1: completed in-store revenue and orders per store, 2024",
             table(["Store", "City", "Revenue (USD)", "Orders"], stores)),
            ("image", "0", "Figure 1: completed in-store revenue per store in 2024",
             "A horizontal bar chart with one bar per store; the longest bar belongs to "
             f"{stores[0][0]} and the shortest to {stores[-1][0]}. The x-axis shows revenue in US dollars."),
            ("p", f"The online shop, which has no store of its own, completed {online_rev[1]} orders worth "
                  f"{money(online_rev[0])} in 2024."),
        ]),
        ("3 Monthly Sales", False, 3, [
            ("p", f"Sales follow the outdoor season and the holidays. In 2024 the strongest month was "
                  f"{month_names[peak - 1]} with {money(months[2024][peak])}, and the weakest was "
                  f"{month_names[low - 1]} with {money(months[2024][low])}."),
            ("image", "1", "Figure 2: monthly revenue from completed orders, 2023 and 2024",
             "A line chart with two lines, one for 2023 and one for 2024, over the twelve months; "
             f"the 2024 line peaks in {month_names[peak - 1]}."),
        ]),
        ("4 Product Categories", False, 4, [
            ("p", f"{cats[0][0]} remained the largest category by revenue ({money(cats[0][1])}), ahead of "
                  f"{cats[1][0]} ({money(cats[1][1])}) and {cats[2][0]} ({money(cats[2][1])}). "
                  f"{cats[-1][0]} was the smallest category with {money(cats[-1][1])}."),
            ("table", "1", "Table 2: revenue and units sold per category, completed orders in 2024",
             table(["Category", "Revenue (USD)", "Units"], cats)),
        ]),
        ("4.1 Best-selling Products", False, 4, [
            ("p", f"The best-selling product of 2024 by units was the {top_products[0][0]} with "
                  f"{top_products[0][1]} units sold. The top five were: "
                  + "; ".join(f"{n} ({u} units)" for n, u in top_products) + "."),
        ]),
        ("5 Customers and Loyalty", False, 5, [
            ("p", f"The customer base counts {n_customers} registered customers, {active} of whom ordered at "
                  "least once in 2024. Loyalty tiers: " + ", ".join(f"{t} {c}" for t, c in tiers) + "."),
            ("table", "2", "Table 3: customers per loyalty tier", table(["Tier", "Customers"], tiers)),
        ]),
        ("6 Returns and Cancellations", False, 5, [
            ("p", f"Of the {n_orders_2024} orders placed in 2024, {status.get('returned', 0)} were returned and "
                  f"{status.get('cancelled', 0)} were cancelled, a combined rate of "
                  f"{100 * (status.get('returned', 0) + status.get('cancelled', 0)) / n_orders_2024:.1f}%."),
        ]),
        ("7 Outlook for 2025", False, 6, [
            ("p", "For 2025 the company plans to extend the online shop to next-day delivery in the Portland and "
                  "Seattle metro areas, to renew the Climbing assortment with a second supplier, and to open a "
                  "seventh store in Reno, Nevada, in the spring. A customer survey planned for March will decide "
                  "whether the loyalty programme gains a fifth tier."),
        ]),
    ]
    doc = ET.Element("Document")
    outline = ET.Element("Outline")
    prev_end = 1
    for sid, (title, is_title, page, items) in enumerate(sections, start=1):
        attrs = {"section_id": str(sid), "start_page_num": f"{min(prev_end, page)}.0", "end_page_num": f"{page}.0"}
        prev_end = page
        s_full, s_out = ET.SubElement(doc, "Section", attrs), ET.SubElement(outline, "Section", attrs)
        tag = "Title" if is_title else "Heading"
        for parent in (s_full, s_out):
            el = ET.SubElement(parent, tag, {"page_num": f"{page}.0"} if is_title else {})
            el.text = title
        for item in items:
            if item[0] == "p":
                ET.SubElement(s_full, "Paragraph", {"page_num": f"{page}.0"}).text = item[1]
                ET.SubElement(s_out, "Paragraph", {"page_num": f"{page}.0",
                                                   "first_sentence": item[1].split(". ")[0]})
            elif item[0] == "table":
                _, tid, caption, markup = item
                for parent in (s_full, s_out):
                    el = ET.SubElement(parent, "HTML_Table", {"table_id": tid, "page_num": f"{page}.0"})
                    el.text = markup
                    ET.SubElement(el, "Caption").text = caption
            else:
                _, iid, caption, alt = item
                el = ET.SubElement(s_full, "Image", {"image_id": iid, "page_num": f"{page}.0"})
                ET.SubElement(el, "Alt_Text").text = alt
                ET.SubElement(el, "Caption").text = caption
                el = ET.SubElement(s_out, "Image", {"image_id": iid, "page_num": f"{page}.0",
                                                    "first_sentence_of_image_description": alt.split(";")[0]})
                ET.SubElement(el, "Caption").text = caption
    for tree, name in ((doc, "all_content.xml"), (outline, "outline.xml")):
        ET.ElementTree(tree).write(folder / name, encoding="utf-8", xml_declaration=True)
    _report_figures(folder / "figures", stores, months)
    return folder


def _report_figures(folder: Path, stores, months) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.barh([s[1] for s in stores][::-1], [s[2] for s in stores][::-1], color="#3c7d4f")
    ax.set_xlabel("revenue (USD)")
    fig.tight_layout()
    fig.savefig(folder / "image_0.png", metadata={"Software": None})
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for year, style in ((2023, "--"), (2024, "-")):
        ax.plot(range(1, 13), [months[year].get(m, 0) for m in range(1, 13)], style, label=str(year))
    ax.set_xticks(range(1, 13))
    ax.set_xlabel("month")
    ax.set_ylabel("revenue (USD)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "image_1.png", metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    for build in (build_markdown, build_html, build_pdf, build_report):
        print("wrote", build().relative_to(REPO))


if __name__ == "__main__":
    main()
