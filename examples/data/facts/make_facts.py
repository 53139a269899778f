#!/usr/bin/env python3
"""Builds facts.csv (domain, entity, attribute, value) from two npm packages; see SOURCES.md.

Run once from this folder:
    npm pack countries-list@3.4.1 periodic-table@0.0.8
    mkdir -p countries-list periodic-table
    tar xzf countries-list-3.4.1.tgz -C countries-list && tar xzf periodic-table-0.0.8.tgz -C periodic-table
    python3 make_facts.py countries-list/package periodic-table/package > facts.csv
Only facts are taken (names, codes, numbers); every sentence in the corpus and the pairs is written by the project's
own templates (src/MLNetFinetune/Data/Facts/FactTemplates.cs).
"""
import csv, json, sys

countries_dir, elements_dir = sys.argv[1], sys.argv[2]
out = csv.writer(sys.stdout, lineterminator="\n")
out.writerow(["domain", "entity", "attribute", "value"])

currencies = json.load(open(f"{countries_dir}/currencies.min.json", encoding="utf-8"))
languages = json.load(open(f"{countries_dir}/languages.min.json", encoding="utf-8"))
for row in csv.DictReader(open(f"{countries_dir}/countries.csv", encoding="utf-8")):
    if not row["Capital"] or row["Continent"] == "Antarctica":
        continue  # uninhabited territories: no capital to ask about
    facts = {"capital": row["Capital"], "continent": row["Continent"]}
    code = row["Currency"].split(",")[0]
    if code in currencies:
        facts["currency"] = currencies[code]["name"]
    lang = row["Languages"].split(",")[0]
    if lang in languages:
        facts["language"] = languages[lang]["name"]
    for attribute, value in facts.items():
        out.writerow(["country", row["Name"], attribute, value])

with open(f"{elements_dir}/data.csv", encoding="utf-8") as f:
    rows = list(csv.reader(f, skipinitialspace=True))
header = [h.strip() for h in rows[0]]
for values in rows[1:]:
    row = dict(zip(header, (v.strip() for v in values)))
    facts = {"symbol": row["symbol"], "atomic number": row["atomicNumber"], "category": row["groupBlock"], "state": row["standardState"]}
    for attribute, value in facts.items():
        if value:
            out.writerow(["element", row["name"], attribute, value])
