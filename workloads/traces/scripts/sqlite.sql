-- Create, insert, index, query, update and delete in an in-memory SQLite database.
-- Recorded with: replay record -o workloads/traces/sqlite.csv.zst -- sqlite3 :memory: ".read workloads/traces/scripts/sqlite.sql"
PRAGMA cache_size = 200;
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, category INTEGER, price REAL, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO items(name, category, price, note)
  SELECT 'item-' || i, i % 37, (i * 7919 % 1000) / 10.0, printf('%.*c', i % 200, 'x') FROM n;
CREATE INDEX items_by_category ON items(category, price);
SELECT category, count(*), avg(price), max(length(note)) FROM items GROUP BY category ORDER BY 3 DESC LIMIT 5;
SELECT name FROM items WHERE category = 3 AND price > 50 ORDER BY price LIMIT 3;
UPDATE items SET note = upper(note) || name WHERE id % 3 = 0;
SELECT count(*) FROM items a JOIN items b ON a.category = b.category AND a.id = b.id - 37;
DELETE FROM items WHERE price < 20;
SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY name DESC LIMIT 200);
VACUUM;
