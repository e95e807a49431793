-- Parquet snapshot layout (OUTPUT_FORMATS=json,parquet):
-- <PREFIX>/snapshots-parquet/<TypeName>/dt=<yyyy-mm-dd>/run=<run-id>/accountid=<a>/region=<r>/part-NNNNN.parquet
-- Same rows and partitioning as the JSON snapshots (dt only; runid, accountid, region are columns),
-- one file per PARQUET_NODES_PER_FILE nodes. Every column is a string, as in the JSON rows
-- (GetInventorySchema's number attributes included): CAST in queries, e.g. CAST(size AS bigint).
-- Columns are matched by name, case-insensitively (the files use the inventory's own names,
-- e.g. Name, resourceId).
CREATE EXTERNAL TABLE IF NOT EXISTS inventory_snapshot_application_parquet (
  name string,
  applicationtype string,
  publisher string,
  version string,
  installedtime string,
  architecture string,
  packageid string,
  release string,
  summary string,
  resourceid string,
  capturetime string,
  schemaversion string,
  accountid string,
  region string,
  runid string
)
PARTITIONED BY (dt string)
STORED AS PARQUET
LOCATION 's3://<BUCKET>/<PREFIX>/snapshots-parquet/AWS:Application/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/snapshots-parquet/AWS:Application/dt=${dt}/'
);

CREATE EXTERNAL TABLE IF NOT EXISTS inventory_snapshot_instanceinformation_parquet (
  agentversion string,
  computername string,
  instancestatus string,
  ipaddress string,
  platformname string,
  platformtype string,
  platformversion string,
  resourcetype string,
  resourceid string,
  capturetime string,
  schemaversion string,
  accountid string,
  region string,
  runid string
)
PARTITIONED BY (dt string)
STORED AS PARQUET
LOCATION 's3://<BUCKET>/<PREFIX>/snapshots-parquet/AWS:InstanceInformation/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.dt.interval' = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://<BUCKET>/<PREFIX>/snapshots-parquet/AWS:InstanceInformation/dt=${dt}/'
);
