-- The seed case as an inventory: one MySQL service ("My서비스") with a
-- primary and two replicas on loopback addresses. The same statements load
-- into MariaDB/MySQL and PostgreSQL; examples/seed-sql.yml builds the
-- node_exporter (:9100) and mysqld_exporter (:9104) targets from it.
CREATE TABLE instances (
  ip           VARCHAR(45) NOT NULL,
  role         VARCHAR(16) NOT NULL,
  db_name      VARCHAR(64) NOT NULL,
  service_name VARCHAR(64) NOT NULL,
  dbms         VARCHAR(16) NOT NULL
);
INSERT INTO instances (ip, role, db_name, service_name, dbms) VALUES
  ('127.0.0.1', 'primary', '프라이머리', 'My서비스', 'MySQL'),
  ('127.0.0.2', 'replica', '세컨더리A', 'My서비스', 'MySQL'),
  ('127.0.0.3', 'replica', '세컨더리B', 'My서비스', 'MySQL');
