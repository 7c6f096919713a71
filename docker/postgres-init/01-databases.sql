-- Run by the postgres image on its first start (empty data volume) only: Django's and Prefect's databases.
CREATE DATABASE emgapi;
CREATE DATABASE prefect;
