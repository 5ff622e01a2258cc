"""GSM8K-style word problems, generated offline and seeded: thirteen templates (shopping, ages, travel, ...), each
with its reasoning lines in GSM8K's format (``<<48/2=24>>`` calculator annotations), then ``#### 24``, so a GSM8K
reward that splits on ``####`` works unchanged. Part of :mod:`data.synthetic` (kind ``gsm8k_style``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable


_NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gabe", "Hana", "Ivan", "Jada", "Kofi", "Lena", "Mateo")
_ITEMS = ("notebooks", "pens", "apples", "muffins", "stickers", "candles", "marbles", "postcards")


def _eq(expr: str, value: int) -> str:
    """GSM8K's calculator annotation: ``"48/2 = <<48/2=24>>24"``."""
    return f"{expr} = <<{expr.replace(' ', '')}={value}>>{value}"


def _shopping(r: random.Random) -> tuple[str, list[str], int]:
    name, item, count, price = r.choice(_NAMES), r.choice(_ITEMS), r.randint(2, 9), r.randint(1, 9)
    cost = count * price
    bill = next(b for b in (10, 20, 50, 100) if b > cost)
    q = f"{name} buys {count} {item} at ${price} each and pays with a ${bill} bill. How much change does {name} get?"
    return q, [f"The {item} cost {_eq(f'{count}*{price}', cost)} dollars.",
               f"The change is {_eq(f'{bill}-{cost}', bill - cost)} dollars."], bill - cost


def _ages(r: random.Random) -> tuple[str, list[str], int]:
    name, age, diff, years = r.choice(_NAMES), r.randint(5, 40), r.randint(2, 15), r.randint(2, 20)
    q = (f"{name} is {age} years old. {name}'s brother is {diff} years older. "
         f"How old will the brother be in {years} years?")
    return q, [f"The brother is {_eq(f'{age}+{diff}', age + diff)} years old now.",
               f"In {years} years he will be {_eq(f'{age + diff}+{years}', age + diff + years)}."], age + diff + years


def _travel(r: random.Random) -> tuple[str, list[str], int]:
    s1, h1, s2, h2 = r.randint(3, 12) * 10, r.randint(1, 5), r.randint(3, 12) * 10, r.randint(1, 5)
    d1, d2 = s1 * h1, s2 * h2
    q = (f"A train travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. "
         "How many kilometers does it travel in total?")
    return q, [f"First part: {_eq(f'{s1}*{h1}', d1)} km.", f"Second part: {_eq(f'{s2}*{h2}', d2)} km.",
               f"Total: {_eq(f'{d1}+{d2}', d1 + d2)} km."], d1 + d2


def _savings(r: random.Random) -> tuple[str, list[str], int]:
    name, weekly, weeks, have = r.choice(_NAMES), r.randint(2, 25), r.randint(3, 20), r.randint(0, 30)
    goal = have + weekly * weeks
    q = (f"{name} wants a bike that costs ${goal}. {name} already has ${have} and saves ${weekly} every week. "
         f"How many weeks until {name} can buy the bike?")
    return q, [f"{name} still needs {_eq(f'{goal}-{have}', goal - have)} dollars.",
               f"That takes {_eq(f'{goal - have}/{weekly}', weeks)} weeks."], weeks


def _sharing(r: random.Random) -> tuple[str, list[str], int]:
    name, friends, each, kept = r.choice(_NAMES), r.randint(2, 8), r.randint(2, 12), r.randint(1, 10)
    total = friends * each + kept
    q = (f"{name} baked {total} cookies, kept {kept} and shared the rest equally among {friends} friends. "
         "How many cookies did each friend get?")
    return q, [f"{name} shared {_eq(f'{total}-{kept}', total - kept)} cookies.",
               f"Each friend got {_eq(f'{total - kept}/{friends}', each)} cookies."], each


def _baking(r: random.Random) -> tuple[str, list[str], int]:
    name, cups, batches = r.choice(_NAMES), r.randint(2, 6), r.randint(2, 9)
    need = cups * batches
    have = r.randint(0, need - 1)
    q = (f"A bread recipe needs {cups} cups of flour per batch. {name} wants to bake {batches} batches and has "
         f"{have} cups of flour. How many more cups of flour does {name} need?")
    return q, [f"{batches} batches need {_eq(f'{cups}*{batches}', need)} cups.",
               f"{name} needs {_eq(f'{need}-{have}', need - have)} more cups."], need - have


def _wages(r: random.Random) -> tuple[str, list[str], int]:
    name, rate, hours, days = r.choice(_NAMES), r.randint(8, 30), r.randint(2, 8), r.randint(2, 6)
    q = f"{name} earns ${rate} an hour and works {hours} hours a day for {days} days. How much does {name} earn?"
    per_day = rate * hours
    return q, [f"Each day {name} earns {_eq(f'{rate}*{hours}', per_day)} dollars.",
               f"Over {days} days that is {_eq(f'{per_day}*{days}', per_day * days)} dollars."], per_day * days


def _garden(r: random.Random) -> tuple[str, list[str], int]:
    name, rows, per_row = r.choice(_NAMES), r.randint(3, 12), r.randint(4, 15)
    planted = rows * per_row
    died = r.randint(0, planted // 3)
    q = (f"{name} plants {rows} rows of tomatoes with {per_row} plants in each row. {died} plants die. "
         "How many plants are left?")
    return q, [f"{name} planted {_eq(f'{rows}*{per_row}', planted)} plants.",
               f"{_eq(f'{planted}-{died}', planted - died)} plants are left."], planted - died


def _reading(r: random.Random) -> tuple[str, list[str], int]:
    name, per_day, days = r.choice(_NAMES), r.randint(5, 40), r.randint(2, 10)
    read = per_day * days
    pages = read + r.randint(1, 200)
    q = f"A book has {pages} pages. {name} reads {per_day} pages a day. How many pages are left after {days} days?"
    return q, [f"In {days} days {name} reads {_eq(f'{per_day}*{days}', read)} pages.",
               f"{_eq(f'{pages}-{read}', pages - read)} pages are left."], pages - read


def _fruit(r: random.Random) -> tuple[str, list[str], int]:
    name, apples = r.choice(_NAMES), r.randint(3, 30)
    oranges = 2 * apples
    fewer = r.randint(1, oranges - 1)
    pears = oranges - fewer
    q = (f"{name} picks {apples} apples, twice as many oranges as apples, and {fewer} fewer pears than oranges. "
         f"How many pieces of fruit does {name} pick in total?")
    total = apples + oranges + pears
    return q, [f"Oranges: {_eq(f'2*{apples}', oranges)}.", f"Pears: {_eq(f'{oranges}-{fewer}', pears)}.",
               f"Total: {_eq(f'{apples}+{oranges}+{pears}', total)}."], total


def _discount(r: random.Random) -> tuple[str, list[str], int]:
    # Prices are multiples of 20, so 10/20/25/50 % off is a whole number of dollars.
    price, pct = r.randint(1, 15) * 20, r.choice((10, 20, 25, 50))
    off = price * pct // 100
    q = f"A jacket costs ${price}. It is on sale for {pct}% off. What is the sale price in dollars?"
    return q, [f"The discount is {_eq(f'{price}*{pct}/100', off)} dollars.",
               f"The sale price is {_eq(f'{price}-{off}', price - off)} dollars."], price - off


def _buses(r: random.Random) -> tuple[str, list[str], int]:
    classes, students, seats = r.randint(2, 8), r.randint(15, 32), r.choice((20, 30, 40, 50))
    total = classes * students
    buses = math.ceil(total / seats)
    q = (f"A school trip has {classes} classes of {students} students each. Each bus holds {seats} students. "
         "How many buses are needed?")
    return q, [f"There are {_eq(f'{classes}*{students}', total)} students.",
               f"{total}/{seats} rounded up is {buses} buses."], buses


def _stamps(r: random.Random) -> tuple[str, list[str], int]:
    a, b = r.sample(_NAMES, 2)
    mine, times, gift = r.randint(5, 40), r.randint(2, 5), r.randint(1, 10)
    theirs = mine * times
    q = (f"{a} has {mine} stamps. {b} has {times} times as many stamps as {a}. {b} gives {a} {gift} stamps. "
         f"How many stamps does {b} have now?")
    return q, [f"{b} had {_eq(f'{mine}*{times}', theirs)} stamps.",
               f"After giving {gift} away, {b} has {_eq(f'{theirs}-{gift}', theirs - gift)} stamps."], theirs - gift


_GSM8K_TEMPLATES: tuple[Callable[[random.Random], tuple[str, list[str], int]], ...] = (
    _shopping, _ages, _travel, _savings, _sharing, _baking, _wages, _garden, _reading, _fruit, _discount, _buses,
    _stamps,
)


def make_gsm8k_style(n: int, seed: int) -> list[dict]:
    """``n`` templated word problems: rows ``{prompt, answer: "<reasoning>\\n#### 42", final_answer: "42"}``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        question, steps, value = rng.choice(_GSM8K_TEMPLATES)(rng)
        rows.append({"prompt": question, "answer": "\n".join(steps) + f"\n#### {value}", "final_answer": str(value)})
    return rows
