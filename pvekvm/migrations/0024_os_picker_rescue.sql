-- Issue 28 items 3 and 4: the templates a product offers (the OS picker; none listed = its own
-- template only) and what a rescue boot replaced (NULL = not in rescue mode). Same definitions
-- as schema.sql.
CREATE TABLE IF NOT EXISTS product_templates (
  product_id    INT UNSIGNED NOT NULL,
  template_id   INT UNSIGNED NOT NULL,
  position      SMALLINT UNSIGNED NOT NULL DEFAULT 0,  -- the catalog's order, for the picker
  PRIMARY KEY (product_id, template_id),
  KEY ix_product_templates_template (template_id),
  CONSTRAINT fk_product_templates_product FOREIGN KEY (product_id) REFERENCES products (id),
  CONSTRAINT fk_product_templates_template FOREIGN KEY (template_id) REFERENCES templates (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
ALTER TABLE services ADD COLUMN IF NOT EXISTS rescue_before VARCHAR(512) NULL AFTER boot_before_iso;
