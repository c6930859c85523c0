"""Build the shipped ``retail.sqlite`` database (and the text2sql benchmark) from scratch.

Every row is generated here from a seeded random generator, so running the script again
gives the same data:

    python seeds/text2sql/build_db.py                 # writes seeds/text2sql/retail.sqlite
    python seeds/text2sql/build_db.py --out X.sqlite  # somewhere else
    python seeds/text2sql/build_db.py --benchmark     # also rewrites benchmark/text2sql.jsonl

The database models a small chain of outdoor-equipment shops ("Northwind Trails") over
2023–2024: stores, staff, customers, a product catalogue with categories and suppliers,
orders with their line items, and payments.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SEED = 20240501

SCHEMA = """
CREATE TABLE stores (
    store_id    INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    city        TEXT NOT NULL,
    state       TEXT NOT NULL,
    opened_on   DATE NOT NULL,
    square_feet INTEGER NOT NULL
);
CREATE TABLE employees (
    employee_id INTEGER PRIMARY KEY,
    first_name  TEXT NOT NULL,
    last_name   TEXT NOT NULL,
    store_id    INTEGER NOT NULL REFERENCES stores(store_id),
    role        TEXT NOT NULL CHECK (role IN ('manager', 'sales associate', 'cashier', 'stock clerk')),
    manager_id  INTEGER REFERENCES employees(employee_id),
    hire_date   DATE NOT NULL,
    hourly_wage REAL NOT NULL
);
CREATE TABLE customers (
    customer_id  INTEGER PRIMARY KEY,
    first_name   TEXT NOT NULL,
    last_name    TEXT NOT NULL,
    email        TEXT NOT NULL UNIQUE,
    city         TEXT NOT NULL,
    state        TEXT NOT NULL,
    signup_date  DATE NOT NULL,
    loyalty_tier TEXT NOT NULL CHECK (loyalty_tier IN ('none', 'silver', 'gold', 'platinum'))
);
CREATE TABLE categories (
    category_id INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL
);
CREATE TABLE suppliers (
    supplier_id INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    country     TEXT NOT NULL,
    lead_days   INTEGER NOT NULL
);
CREATE TABLE products (
    product_id   INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    category_id  INTEGER NOT NULL REFERENCES categories(category_id),
    supplier_id  INTEGER NOT NULL REFERENCES suppliers(supplier_id),
    unit_price   REAL NOT NULL,
    unit_cost    REAL NOT NULL,
    discontinued INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE orders (
    order_id    INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(customer_id),
    store_id    INTEGER REFERENCES stores(store_id),
    employee_id INTEGER REFERENCES employees(employee_id),
    order_date  DATE NOT NULL,
    channel     TEXT NOT NULL CHECK (channel IN ('in-store', 'online')),
    status      TEXT NOT NULL CHECK (status IN ('completed', 'cancelled', 'returned'))
);
CREATE TABLE order_items (
    order_id   INTEGER NOT NULL REFERENCES orders(order_id),
    product_id INTEGER NOT NULL REFERENCES products(product_id),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price REAL NOT NULL,
    discount   REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, product_id)
);
CREATE TABLE payments (
    payment_id INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders(order_id),
    method     TEXT NOT NULL CHECK (method IN ('card', 'cash', 'gift card', 'paypal')),
    amount     REAL NOT NULL,
    paid_at    TIMESTAMP NOT NULL
);
CREATE INDEX ix_orders_customer ON orders(customer_id);
CREATE INDEX ix_orders_date ON orders(order_date);
CREATE INDEX ix_items_product ON order_items(product_id);
CREATE VIEW order_totals AS
    SELECT o.order_id, o.order_date, o.status, o.channel, o.customer_id, o.store_id,
           ROUND(SUM(i.quantity * i.unit_price * (1 - i.discount)), 2) AS total
    FROM orders o JOIN order_items i ON i.order_id = o.order_id
    GROUP BY o.order_id;
"""

STORES = [
    ("Northwind Trails Portland", "Portland", "OR", "2015-04-11", 12000),
    ("Northwind Trails Seattle", "Seattle", "WA", "2016-09-03", 15500),
    ("Northwind Trails Boise", "Boise", "ID", "2018-05-19", 9000),
    ("Northwind Trails Denver", "Denver", "CO", "2019-03-02", 14200),
    ("Northwind Trails Salt Lake City", "Salt Lake City", "UT", "2021-06-26", 11000),
    ("Northwind Trails Bend", "Bend", "OR", "2023-08-05", 7800),
]
FIRST = ["Ava", "Liam", "Noah", "Emma", "Olivia", "Mateo", "Sofia", "Ethan", "Mia", "Lucas", "Amelia",
         "Hiro", "Priya", "Chen", "Fatima", "Diego", "Grace", "Owen", "Zara", "Isaac", "Leila", "Jonas",
         "Nora", "Samuel", "Aisha", "Felix", "Hannah", "Ravi", "Elena", "Marcus", "Yuki", "Tomas"]
LAST = ["Nguyen", "Smith", "Garcia", "Johnson", "Kim", "Patel", "Brown", "Martinez", "Lee", "Davis",
        "Wilson", "Lopez", "Anderson", "Thomas", "Moore", "Clark", "Lewis", "Walker", "Young", "Hall",
        "Allen", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Rivera", "Campbell"]
CITIES = [("Portland", "OR"), ("Eugene", "OR"), ("Bend", "OR"), ("Seattle", "WA"), ("Tacoma", "WA"),
          ("Spokane", "WA"), ("Boise", "ID"), ("Denver", "CO"), ("Boulder", "CO"), ("Salt Lake City", "UT"),
          ("Provo", "UT"), ("Reno", "NV")]
CATEGORIES = [
    ("Tents", "Backpacking and family camping tents"),
    ("Sleeping Bags", "Down and synthetic sleeping bags and liners"),
    ("Backpacks", "Daypacks and multi-day packs"),
    ("Footwear", "Hiking boots, trail runners and sandals"),
    ("Apparel", "Jackets, base layers and rain gear"),
    ("Cooking", "Stoves, fuel, cookware and utensils"),
    ("Navigation", "Compasses, GPS units and maps"),
    ("Climbing", "Harnesses, ropes, carabiners and helmets"),
]
SUPPLIERS = [("Cascade Outfitters Co", "USA", 7), ("Alpine Gear GmbH", "Germany", 21),
             ("Summit Textiles Ltd", "Canada", 10), ("Fjordline AS", "Norway", 25),
             ("Pacific Rim Manufacturing", "Vietnam", 35), ("Andes Equipment SA", "Chile", 30),
             ("Kiwi Trail Supply", "New Zealand", 28)]
PRODUCT_WORDS = {
    "Tents": (["Ridgeline", "Basecamp", "Skyview", "Tundra", "Meadow"], ["1P Tent", "2P Tent", "4P Tent", "Shelter"]),
    "Sleeping Bags": (["Ember", "Glacier", "Nimbus", "Polar"], ["20F Bag", "35F Bag", "0F Bag", "Quilt"]),
    "Backpacks": (["Switchback", "Traverse", "Sprint", "Canyon", "Pathfinder"], ["22L Daypack", "45L Pack", "65L Pack"]),
    "Footwear": (["Granite", "Talus", "Creekside", "Scree"], ["Mid Boot", "Trail Runner", "Sandal", "Approach Shoe"]),
    "Apparel": (["Stormwall", "Thermal", "Breeze", "Drift", "Ridge"], ["Rain Jacket", "Fleece", "Base Layer", "Down Vest"]),
    "Cooking": (["Flint", "Campfire", "Ration", "Kettle"], ["Stove", "Pot Set", "Spork", "Fuel Canister"]),
    "Navigation": (["True North", "Waypoint", "Bearing"], ["Compass", "GPS Unit", "Map Set"]),
    "Climbing": (["Crux", "Belay", "Anchor", "Summit"], ["Harness", "Rope 60m", "Carabiner Pack", "Helmet"]),
}
PRICE_RANGE = {"Tents": (120, 520), "Sleeping Bags": (80, 380), "Backpacks": (45, 310), "Footwear": (60, 210),
               "Apparel": (25, 260), "Cooking": (6, 140), "Navigation": (15, 420), "Climbing": (12, 290)}


def _date(rng: random.Random, start: dt.date, end: dt.date) -> dt.date:
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def build(out: Path) -> Path:
    """Create the database at ``out`` (replacing it) and return the path."""
    rng = random.Random(SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    con.executescript("PRAGMA foreign_keys = ON;" + SCHEMA)

    con.executemany("INSERT INTO stores VALUES (?,?,?,?,?,?)", [(i + 1, *s) for i, s in enumerate(STORES)])

    employees, emp_id = [], 0
    store_staff: dict[int, list[int]] = {}
    for store_id, store in enumerate(STORES, start=1):
        opened = dt.date.fromisoformat(store[3])
        emp_id += 1
        manager = emp_id
        employees.append((manager, rng.choice(FIRST), rng.choice(LAST), store_id, "manager", None,
                          _date(rng, opened, dt.date(2023, 12, 31)).isoformat(), round(rng.uniform(31, 42), 2)))
        store_staff[store_id] = [manager]
        for _ in range(rng.randint(5, 8)):
            emp_id += 1
            role = rng.choice(["sales associate", "sales associate", "cashier", "stock clerk"])
            wage = {"sales associate": (17, 24), "cashier": (16, 20), "stock clerk": (16, 21)}[role]
            employees.append((emp_id, rng.choice(FIRST), rng.choice(LAST), store_id, role, manager,
                              _date(rng, opened, dt.date(2024, 10, 31)).isoformat(), round(rng.uniform(*wage), 2)))
            store_staff[store_id].append(emp_id)
    con.executemany("INSERT INTO employees VALUES (?,?,?,?,?,?,?,?)", employees)

    customers, seen_emails = [], set()
    for cid in range(1, 701):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}".lower()
        n = 1
        while email + "@example.com" in seen_emails:
            n += 1
            email = f"{first}.{last}{n}".lower()
        email += "@example.com"
        seen_emails.add(email)
        city, state = rng.choice(CITIES)
        tier = rng.choices(["none", "silver", "gold", "platinum"], weights=[55, 25, 15, 5])[0]
        customers.append((cid, first, last, email, city, state,
                          _date(rng, dt.date(2019, 1, 1), dt.date(2024, 11, 30)).isoformat(), tier))
    con.executemany("INSERT INTO customers VALUES (?,?,?,?,?,?,?,?)", customers)

    con.executemany("INSERT INTO categories VALUES (?,?,?)", [(i + 1, *c) for i, c in enumerate(CATEGORIES)])
    con.executemany("INSERT INTO suppliers VALUES (?,?,?,?)", [(i + 1, *s) for i, s in enumerate(SUPPLIERS)])

    products, pid, names = [], 0, set()
    for cat_id, (cat, _) in enumerate(CATEGORIES, start=1):
        brands, kinds = PRODUCT_WORDS[cat]
        lo, hi = PRICE_RANGE[cat]
        for brand in brands:
            for kind in rng.sample(kinds, k=min(len(kinds), 3)):
                name = f"{brand} {kind}"
                if name in names:
                    continue
                names.add(name)
                pid += 1
                price = round(rng.uniform(lo, hi), 0) - 0.01
                cost = round(price * rng.uniform(0.42, 0.68), 2)
                products.append((pid, name, cat_id, rng.randint(1, len(SUPPLIERS)), price, cost,
                                 1 if rng.random() < 0.08 else 0))
    con.executemany("INSERT INTO products VALUES (?,?,?,?,?,?,?)", products)

    orders, items, payments = [], [], []
    start, end = dt.date(2023, 1, 1), dt.date(2024, 12, 31)
    pay_id = 0
    for oid in range(1, 3201):
        customer = rng.randint(1, len(customers))
        day = _date(rng, start, end)
        if day.month in (11, 12) and rng.random() < 0.3:  # holiday rush
            day = _date(rng, dt.date(day.year, 11, 15), dt.date(day.year, 12, 24))
        channel = "online" if rng.random() < 0.35 else "in-store"
        open_stores = [i + 1 for i, s in enumerate(STORES) if dt.date.fromisoformat(s[3]) <= day]
        store = rng.choice(open_stores) if channel == "in-store" else None
        employee = rng.choice(store_staff[store][1:]) if store else None
        status = rng.choices(["completed", "cancelled", "returned"], weights=[90, 4, 6])[0]
        orders.append((oid, customer, store, employee, day.isoformat(), channel, status))
        total = 0.0
        for product in rng.sample(products, k=rng.choices([1, 2, 3, 4], weights=[45, 30, 17, 8])[0]):
            qty = rng.choices([1, 2, 3, 4], weights=[70, 20, 7, 3])[0]
            discount = rng.choices([0.0, 0.1, 0.15, 0.25], weights=[75, 12, 8, 5])[0]
            items.append((oid, product[0], qty, product[4], discount))
            total += qty * product[4] * (1 - discount)
        if status != "cancelled":
            pay_id += 1
            method = rng.choice(["card", "card", "card", "cash", "gift card"]) if store else rng.choice(["card", "paypal"])
            paid = dt.datetime.combine(day, dt.time(rng.randint(9, 20), rng.randint(0, 59)))
            payments.append((pay_id, oid, method, round(total, 2), paid.isoformat(sep=" ")))
    con.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?)", orders)
    con.executemany("INSERT INTO order_items VALUES (?,?,?,?,?)", items)
    con.executemany("INSERT INTO payments VALUES (?,?,?,?,?)", payments)
    con.commit()
    problems = con.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"foreign key violations: {problems[:5]}")
    con.execute("VACUUM")
    con.close()
    tmp.replace(out)
    return out


# (question, gold SQL). The answer stored in the benchmark is the query's result,
# formatted by ``format_answer``; a test recomputes it from the shipped database.
QUESTIONS = [
    ("How many customers does the retail database have?", "SELECT COUNT(*) FROM customers"),
    ("How many stores are in the state of Oregon (OR)?", "SELECT COUNT(*) FROM stores WHERE state = 'OR'"),
    ("Which store opened most recently?", "SELECT name FROM stores ORDER BY opened_on DESC LIMIT 1"),
    ("How many products are marked as discontinued?", "SELECT COUNT(*) FROM products WHERE discontinued = 1"),
    ("What is the most expensive product (by unit price)?", "SELECT name FROM products ORDER BY unit_price DESC LIMIT 1"),
    ("How many orders were placed online in 2024?",
     "SELECT COUNT(*) FROM orders WHERE channel = 'online' AND order_date BETWEEN '2024-01-01' AND '2024-12-31'"),
    ("How many orders were cancelled in total?", "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'"),
    ("How many products are in the Footwear category?",
     "SELECT COUNT(*) FROM products p JOIN categories c ON c.category_id = p.category_id WHERE c.name = 'Footwear'"),
    ("Which supplier's country is Norway? Give the supplier name.", "SELECT name FROM suppliers WHERE country = 'Norway'"),
    ("What was the total amount paid by PayPal, rounded to 2 decimals?",
     "SELECT ROUND(SUM(amount), 2) FROM payments WHERE method = 'paypal'"),
    ("Which store had the highest revenue from completed in-store orders in 2024?",
     "SELECT s.name FROM order_totals t JOIN stores s ON s.store_id = t.store_id "
     "WHERE t.status = 'completed' AND t.order_date LIKE '2024-%' GROUP BY s.store_id ORDER BY SUM(t.total) DESC LIMIT 1"),
    ("How many employees work at the Denver store?",
     "SELECT COUNT(*) FROM employees e JOIN stores s ON s.store_id = e.store_id WHERE s.city = 'Denver'"),
    ("What is the full name of the manager of the Seattle store?",
     "SELECT e.first_name || ' ' || e.last_name FROM employees e JOIN stores s ON s.store_id = e.store_id "
     "WHERE s.city = 'Seattle' AND e.role = 'manager'"),
    ("How many customers have the platinum loyalty tier?", "SELECT COUNT(*) FROM customers WHERE loyalty_tier = 'platinum'"),
    ("Which product sold the most units across all completed orders?",
     "SELECT p.name FROM order_items i JOIN orders o ON o.order_id = i.order_id JOIN products p ON p.product_id = i.product_id "
     "WHERE o.status = 'completed' GROUP BY p.product_id ORDER BY SUM(i.quantity) DESC, p.name LIMIT 1"),
    ("In which month of 2024 (YYYY-MM) were the most orders placed?",
     "SELECT substr(order_date, 1, 7) AS month FROM orders WHERE order_date LIKE '2024-%' "
     "GROUP BY month ORDER BY COUNT(*) DESC, month LIMIT 1"),
    ("What is the average hourly wage of cashiers, rounded to 2 decimals?",
     "SELECT ROUND(AVG(hourly_wage), 2) FROM employees WHERE role = 'cashier'"),
    ("Which category earned the most revenue from completed orders (quantity x price after discount)?",
     "SELECT c.name FROM order_items i JOIN orders o ON o.order_id = i.order_id "
     "JOIN products p ON p.product_id = i.product_id JOIN categories c ON c.category_id = p.category_id "
     "WHERE o.status = 'completed' GROUP BY c.category_id "
     "ORDER BY SUM(i.quantity * i.unit_price * (1 - i.discount)) DESC LIMIT 1"),
    ("How many distinct customers placed at least one order in 2023?",
     "SELECT COUNT(DISTINCT customer_id) FROM orders WHERE order_date LIKE '2023-%'"),
    ("How many customers never placed an order?",
     "SELECT COUNT(*) FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)"),
    ("What is the email of the customer with the largest total spend on completed orders?",
     "SELECT c.email FROM order_totals t JOIN customers c ON c.customer_id = t.customer_id "
     "WHERE t.status = 'completed' GROUP BY c.customer_id ORDER BY SUM(t.total) DESC LIMIT 1"),
    ("Among suppliers of Climbing products, which one has the longest lead time?",
     "SELECT DISTINCT s.name FROM products p JOIN suppliers s ON s.supplier_id = p.supplier_id "
     "JOIN categories c ON c.category_id = p.category_id WHERE c.name = 'Climbing' "
     "AND s.lead_days = (SELECT MAX(s2.lead_days) FROM products p2 JOIN suppliers s2 ON s2.supplier_id = p2.supplier_id "
     "WHERE p2.category_id = c.category_id)"),
    ("What share of orders (in percent, rounded to 1 decimal) were returned?",
     "SELECT ROUND(100.0 * SUM(status = 'returned') / COUNT(*), 1) FROM orders"),
    ("Which employee (full name) handled the most in-store orders?",
     "SELECT e.first_name || ' ' || e.last_name FROM orders o JOIN employees e ON e.employee_id = o.employee_id "
     "GROUP BY e.employee_id ORDER BY COUNT(*) DESC, e.employee_id LIMIT 1"),
    ("How many products have a gross margin (unit_price - unit_cost) above 100 dollars?",
     "SELECT COUNT(*) FROM products WHERE unit_price - unit_cost > 100"),
]


def format_answer(rows: list[tuple]) -> str:
    """The benchmark's answer text for a query result (one value expected)."""
    if len(rows) != 1 or len(rows[0]) != 1:
        raise ValueError(f"a benchmark query must return exactly one value, got {rows[:3]}")
    value = rows[0][0]
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return str(value)


def write_benchmark(db: Path, out: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with out.open("w", encoding="utf-8") as fh:
        for n, (question, sql) in enumerate(QUESTIONS, start=1):
            answer = format_answer(con.execute(sql).fetchall())
            record = {"id": f"text2sql_{n:03d}", "question": question, "answer": answer,
                      "kwargs": {"db_id": "retail"}, "sql": sql}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    con.close()
    return len(QUESTIONS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "retail.sqlite")
    parser.add_argument("--benchmark", action="store_true", help="also write benchmark/text2sql.jsonl")
    args = parser.parse_args(argv)
    path = build(args.out)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    if args.benchmark:
        n = write_benchmark(path, REPO / "benchmark" / "text2sql.jsonl")
        print(f"wrote {n} questions to benchmark/text2sql.jsonl")


if __name__ == "__main__":
    main()
