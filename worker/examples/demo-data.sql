-- Demo data for worker/examples/demo.toml: customers and their tickets (portable SQL:
-- SQLite, PostgreSQL, MariaDB/MySQL and SQL Server accept it).
CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL);
CREATE TABLE tickets (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers (id), title VARCHAR(200) NOT NULL, status VARCHAR(20) NOT NULL, price DECIMAL(10,2));
INSERT INTO customers (id, name, email) VALUES (1, 'Ada Lovelace', 'ada@example.com'), (2, 'Grace Hopper', 'grace@example.com');
INSERT INTO tickets (id, customer_id, title, status, price) VALUES (1, 1, 'Printer on fire', 'open', 12.50), (2, 1, 'No coffee', 'open', NULL), (3, 2, 'Compiler bug', 'closed', 99.00);
