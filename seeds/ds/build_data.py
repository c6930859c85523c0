"""Build the ``ds`` seed data: a bookshop chain's year of sales, as four related CSV files.

    python seeds/ds/build_data.py          # writes seeds/ds/bookshop/*.csv,
                                           # seeds/ds/seeds.jsonl and benchmark/ds.jsonl

Deterministic (a fixed ``random.Random`` seed, plain ``csv`` writing), so running it again
gives byte-identical files; ``tests/tools/test_ds.py`` checks that, and recomputes every
benchmark answer from the CSV files with pandas. The answers here are computed with plain
Python from the generated rows, independently of pandas.

Tables (``sales`` references the other three):

- ``stores.csv``  store_id, city, region, opened, size_sqm
- ``books.csv``   book_id, title, author, genre, price, pub_year (some years missing)
- ``staff.csv``   staff_id, name, store_id, role, hire_date, salary
- ``sales.csv``   sale_id, date, store_id, book_id, staff_id, quantity, discount

Revenue of a sale is ``quantity * price * (1 - discount)``.
"""
from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import json
import random
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "bookshop"
SEED_PATH = "seeds/ds/bookshop"
RNG_SEED = 20240610

STORES = [  # store_id, city, region, opened, size_sqm
    ("S01", "Leeds", "North", "2011-04-02", 420),
    ("S02", "Bristol", "West", "2008-09-15", 380),
    ("S03", "Norwich", "East", "2015-03-21", 250),
    ("S04", "Brighton", "South", "2012-06-30", 310),
    ("S05", "Newcastle", "North", "2018-11-10", 290),
    ("S06", "Exeter", "West", "2005-02-12", 200),
]
GENRES = ["Fiction", "Mystery", "Science", "History", "Children", "Cookbook", "Fantasy"]
FIRST = ["Ada", "Ben", "Cara", "Dev", "Elin", "Farid", "Gwen", "Hugo", "Ines", "Jon", "Kira", "Liam",
         "Mona", "Nils", "Orla", "Pavel", "Quinn", "Rosa", "Sami", "Tess", "Umar", "Vera", "Wes", "Yara"]
LAST = ["Archer", "Brooks", "Chen", "Dalton", "Evans", "Fischer", "Garcia", "Hughes", "Iqbal", "Jensen",
        "Khan", "Lopez", "Moreau", "Novak", "Okafor", "Price", "Quist", "Reyes", "Silva", "Turner"]
ADJ = ["Silent", "Crimson", "Hidden", "Northern", "Last", "Golden", "Broken", "Quiet", "Wild", "Distant",
       "Paper", "Winter", "Salt", "Iron", "Glass"]
NOUN = ["Harbour", "Garden", "Equation", "Empire", "Kitchen", "Forest", "Letters", "Orbit", "River",
        "Map", "Atlas", "Lantern", "Tide", "Clock", "Bridge"]
N_BOOKS, N_SOLD_BOOKS, N_SALES = 60, 56, 2400


def generate(seed: int = RNG_SEED) -> dict[str, list[dict]]:
    """All four tables as lists of row dicts (values already in their CSV form)."""
    rng = random.Random(seed)
    stores = [dict(store_id=s, city=c, region=r, opened=o, size_sqm=z) for s, c, r, o, z in STORES]
    authors = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(22)]
    titles = rng.sample([f"The {a} {n}" for a in ADJ for n in NOUN], N_BOOKS)
    books = []
    for i, title in enumerate(titles, 1):
        books.append(dict(
            book_id=f"B{i:03d}", title=title, author=rng.choice(authors), genre=rng.choice(GENRES),
            price=round(rng.uniform(6, 45), 2),
            pub_year=None if rng.random() < 0.08 else rng.randint(1950, 2024),
        ))
    staff, n = [], 0
    for store in stores:
        for role in ["Manager"] + ["Buyer"] * rng.randint(0, 1) + ["Clerk"] * rng.randint(2, 4):
            n += 1
            base = {"Manager": 42000, "Buyer": 33000, "Clerk": 24000}[role]
            hired = dt.date(2004, 1, 1) + dt.timedelta(days=rng.randint(0, 19 * 365))
            staff.append(dict(staff_id=f"E{n:03d}", name=f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                              store_id=store["store_id"], role=role, hire_date=hired.isoformat(),
                              salary=base + 500 * rng.randint(0, 20)))
    by_store = defaultdict(list)
    for person in staff:
        if person["role"] != "Buyer":
            by_store[person["store_id"]].append(person["staff_id"])
    store_weights = [1.4, 1.2, 0.7, 1.0, 0.8, 0.6]
    sold_books = books[:N_SOLD_BOOKS]
    book_weights = [rng.uniform(0.3, 3.0) for _ in sold_books]
    sales = []
    for i in range(1, N_SALES + 1):
        day = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 365))
        store = rng.choices(stores, store_weights)[0]["store_id"]
        book = rng.choices(sold_books, book_weights)[0]["book_id"]
        sales.append(dict(
            sale_id=i, date=day.isoformat(), store_id=store, book_id=book,
            staff_id=rng.choice(by_store[store]), quantity=rng.choices([1, 2, 3, 4], [55, 25, 12, 8])[0],
            discount=rng.choices([0.0, 0.1, 0.2], [70, 20, 10])[0],
        ))
    sales.sort(key=lambda s: (s["date"], s["sale_id"]))
    for i, sale in enumerate(sales, 1):
        sale["sale_id"] = i
    return {"stores": stores, "books": books, "staff": staff, "sales": sales}


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _argmax(counter: dict) -> str:
    """The single key with the largest value (ties would make a bad question)."""
    ranked = sorted(counter.items(), key=lambda kv: kv[1], reverse=True)
    if len(ranked) > 1 and abs(ranked[0][1] - ranked[1][1]) < 1e-6:
        raise ValueError(f"tie for first place: {ranked[:2]}")
    return ranked[0][0]


def questions(t: dict[str, list[dict]]) -> list[tuple[str, str, object]]:
    """(id, question, answer) computed with plain Python."""
    books = {b["book_id"]: b for b in t["books"]}
    stores = {s["store_id"]: s for s in t["stores"]}
    staff = {p["staff_id"]: p for p in t["staff"]}
    sales = t["sales"]

    def revenue(s):
        return s["quantity"] * books[s["book_id"]]["price"] * (1 - s["discount"])

    def total(fn, rows=sales):
        acc: dict = defaultdict(float)
        for s in rows:
            acc[fn(s)] += revenue(s)
        return acc

    units_by_genre = Counter()
    for s in sales:
        units_by_genre[books[s["book_id"]]["genre"]] += s["quantity"]
    by_month = total(lambda s: int(s["date"][5:7]))
    per_sqm = defaultdict(float)
    sqm = defaultdict(int)
    for st in t["stores"]:
        sqm[st["region"]] += st["size_sqm"]
    for region, rev in total(lambda s: stores[s["store_id"]]["region"]).items():
        per_sqm[region] = rev / sqm[region]
    weekday_units = Counter()
    for s in sales:
        weekday_units[calendar.day_name[dt.date.fromisoformat(s["date"]).weekday()]] += s["quantity"]
    s03 = [s["quantity"] for s in sales if s["store_id"] == "S03"]
    managers = [p["salary"] for p in t["staff"] if p["role"] == "Manager"]
    q4_fiction = sum(revenue(s) for s in sales
                     if s["date"] >= "2024-10-01" and books[s["book_id"]]["genre"] == "Fiction")
    return [
        ("ds_001", "How many sales transactions are recorded in sales.csv?", len(sales)),
        ("ds_002", "How many book units were sold in total across all stores?", sum(s["quantity"] for s in sales)),
        ("ds_003", "Which city's store had the highest total revenue in 2024? Revenue of a sale is quantity * price * (1 - discount).",
         stores[_argmax(total(lambda s: s["store_id"]))]["city"]),
        ("ds_004", "Which book genre sold the most units?", _argmax(units_by_genre)),
        ("ds_005", "What was the total revenue of all sales (quantity * price * (1 - discount)), rounded to 2 decimals?",
         round(sum(revenue(s) for s in sales), 2)),
        ("ds_006", "What is the average list price of the books in the catalogue, rounded to 2 decimals?",
         round(sum(b["price"] for b in t["books"]) / len(t["books"]), 2)),
        ("ds_007", "Which author has the most titles in the catalogue?", _argmax(Counter(b["author"] for b in t["books"]))),
        ("ds_008", "How many books in the catalogue have no publication year recorded?",
         sum(1 for b in t["books"] if b["pub_year"] is None)),
        ("ds_009", "In which month of 2024 (full month name) was revenue highest?", calendar.month_name[_argmax(by_month)]),
        ("ds_010", "Which staff member (name) handled the most sales transactions?",
         staff[_argmax(Counter(s["staff_id"] for s in sales))]["name"]),
        ("ds_011", "What is the average salary of store managers, rounded to 2 decimals?", round(sum(managers) / len(managers), 2)),
        ("ds_012", "How many stores are in the North region?", sum(1 for s in t["stores"] if s["region"] == "North")),
        ("ds_013", "Which book title generated the most revenue?", books[_argmax(total(lambda s: s["book_id"]))]["title"]),
        ("ds_014", "What percentage of sales transactions had a discount, rounded to 1 decimal?",
         round(100 * sum(1 for s in sales if s["discount"] > 0) / len(sales), 1)),
        ("ds_015", "Which region had the highest revenue per square metre of store floor space?", _argmax(per_sqm)),
        ("ds_016", "How many books in the catalogue were never sold?",
         len(books) - len({s["book_id"] for s in sales})),
        ("ds_017", "What is the average number of units per sale at store S03, rounded to 2 decimals?",
         round(sum(s03) / len(s03), 2)),
        ("ds_018", "In which city is the oldest store (earliest opening date)?", min(t["stores"], key=lambda s: s["opened"])["city"]),
        ("ds_019", "What was the revenue from Fiction books in the fourth quarter (October to December) of 2024, rounded to 2 decimals?",
         round(q4_fiction, 2)),
        ("ds_020", "How many staff members were hired before 2010?", sum(1 for p in t["staff"] if p["hire_date"] < "2010-01-01")),
        ("ds_021", "On which day of the week were the most units sold?", _argmax(weekday_units)),
        ("ds_022", "What was the total revenue of sales handled by clerks, rounded to 2 decimals?",
         round(sum(revenue(s) for s in sales if staff[s["staff_id"]]["role"] == "Clerk"), 2)),
        ("ds_023", "What is the title of the most expensive book in the catalogue?", max(t["books"], key=lambda b: b["price"])["title"]),
        ("ds_024", "How many sales transactions sold 3 or more units?", sum(1 for s in sales if s["quantity"] >= 3)),
    ]


SEEDS = [
    "Analyze the bookshop chain's sales in the CSV files: which stores, genres and books drive revenue?",
    "Compare the stores by revenue per square metre and by revenue per staff member. Which store is the most efficient?",
    "Look for seasonality: how do monthly units and revenue change over 2024, and does it differ by genre?",
    "How do discounts relate to the number of units per sale? Are discounted sales larger?",
    "Which authors are the best sellers, and is a book's publication year related to how well it sells?",
    "Rank the staff by the revenue of the sales they handled, and compare it with their salaries.",
]


def build(out_dir: Path = DATA, repo: Path | None = REPO) -> dict[str, Path]:
    """Write the CSV files to ``out_dir``, and the seeds and benchmark under ``repo``."""
    tables = generate()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, rows in tables.items():
        path = out_dir / f"{name}.csv"
        path.write_text(to_csv(rows))
        written[name] = path
    if repo is not None:
        seeds = repo / "seeds" / "ds" / "seeds.jsonl"
        seeds.write_text("".join(json.dumps({"content": c, "kwargs": {"seed_path": SEED_PATH}}) + "\n" for c in SEEDS))
        bench = repo / "benchmark" / "ds.jsonl"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("".join(
            json.dumps({"id": qid, "question": q, "answer": a, "kwargs": {"seed_path": SEED_PATH}}) + "\n"
            for qid, q, a in questions(tables)))
        written.update(seeds=seeds, benchmark=bench)
    return written


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}: {path}")
