-- A project can make pseudonymised entry names the default for every upload to it.
ALTER TABLE projects ADD COLUMN pseudonymize_names boolean NOT NULL DEFAULT false;
